//! The vm.conf tokenizer: files and includes, comments, continuation lines,
//! quoting, numbers, keywords and `$macro` expansion (parse.y's `yylex`,
//! `lgetc`, `pushfile`, `symset`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Longest token accepted, as parse.y's lexer buffer.
const MAX_TOKEN: usize = 8096;

/// Most nested `include` levels; recursion is caught before this.
const MAX_INCLUDE_DEPTH: usize = 32;

/// A lexical error, reported at the line where it happened.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum LexError {
    /// reached end of file while parsing quoted string
    #[error("reached end of file while parsing quoted string")]
    UnterminatedQuote,
    /// string too long
    #[error("string too long")]
    StringTooLong,
    /// A NUL byte inside a quoted string.
    #[error("syntax error")]
    NulInString,
    /// A `$name` that names no macro.
    #[error("macro '{0}' not defined")]
    UndefinedMacro(String),
    /// A number that does not fit in 64 bits.
    #[error("\"{0}\" invalid number: {1}")]
    InvalidNumber(String, &'static str),
    /// An `include` that cannot be opened.
    #[error("failed to include file {0}: {1}")]
    Include(String, String),
    /// An `include` of a file that is already being read.
    #[error("failed to include file {0}: recursive include")]
    IncludeRecursion(String),
    /// Too deeply nested includes.
    #[error("failed to include file {0}: includes nested too deeply")]
    IncludeDepth(String),
}

/// The reserved words (parse.y's keyword table plus our extensions).
/// Unquoted words equal to one of these are keywords, never strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kw {
    Add,
    Agentx,
    Allow,
    Boot,
    Cdrom,
    Cmdline,
    Context,
    Cpus,
    Delay,
    Device,
    Disable,
    Disk,
    Down,
    Enable,
    Format,
    Group,
    Id,
    Include,
    Inet6,
    Initrd,
    Instance,
    Interface,
    Interfaces,
    Limit,
    Lladdr,
    Local,
    Locked,
    Memory,
    Net,
    Owner,
    Parallel,
    Path,
    Prefix,
    Rdomain,
    Sev,
    Seves,
    Size,
    Socket,
    Staggered,
    Start,
    Switch,
    Up,
    User,
    Vm,
}

/// Keyword table, sorted by name for binary search (as parse.y's `lookup`).
const KEYWORDS: &[(&str, Kw)] = &[
    ("add", Kw::Add),
    ("agentx", Kw::Agentx),
    ("allow", Kw::Allow),
    ("boot", Kw::Boot),
    ("cdrom", Kw::Cdrom),
    ("cmdline", Kw::Cmdline),
    ("context", Kw::Context),
    ("cpus", Kw::Cpus),
    ("delay", Kw::Delay),
    ("device", Kw::Device),
    ("disable", Kw::Disable),
    ("disk", Kw::Disk),
    ("down", Kw::Down),
    ("enable", Kw::Enable),
    ("format", Kw::Format),
    ("group", Kw::Group),
    ("id", Kw::Id),
    ("include", Kw::Include),
    ("inet6", Kw::Inet6),
    ("initrd", Kw::Initrd),
    ("instance", Kw::Instance),
    ("interface", Kw::Interface),
    ("interfaces", Kw::Interfaces),
    ("limit", Kw::Limit),
    ("lladdr", Kw::Lladdr),
    ("local", Kw::Local),
    ("locked", Kw::Locked),
    ("memory", Kw::Memory),
    ("net", Kw::Net),
    ("owner", Kw::Owner),
    ("parallel", Kw::Parallel),
    ("path", Kw::Path),
    ("prefix", Kw::Prefix),
    ("rdomain", Kw::Rdomain),
    ("sev", Kw::Sev),
    ("seves", Kw::Seves),
    ("size", Kw::Size),
    ("socket", Kw::Socket),
    ("staggered", Kw::Staggered),
    ("start", Kw::Start),
    ("switch", Kw::Switch),
    ("up", Kw::Up),
    ("user", Kw::User),
    ("vm", Kw::Vm),
];

/// Every reserved word, sorted.
pub fn keywords() -> impl Iterator<Item = &'static str> {
    KEYWORDS.iter().map(|(name, _)| *name)
}

/// Look a word up in the keyword table.
pub fn lookup(word: &str) -> Option<Kw> {
    KEYWORDS
        .binary_search_by(|(name, _)| name.cmp(&word))
        .ok()
        .map(|i| KEYWORDS[i].1)
}

/// What a token is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tok {
    /// A word or quoted string that is not a keyword.
    Str(String),
    /// An unquoted integer.
    Num(i64),
    /// A reserved word.
    Kw(Kw),
    /// Any other single character: `{`, `}`, `=`, `,`, newline, ...
    Char(u8),
    /// A lexical error was reported and the rest of its line skipped.
    Error,
    /// End of the top file.
    Eof,
}

/// A token with where it started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// The token.
    pub tok: Tok,
    /// Index into [`Lexer::file_names`].
    pub file: usize,
    /// 1-based line number.
    pub line: u32,
}

/// A lexical error with its location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LexDiag {
    /// Index into [`Lexer::file_names`].
    pub file: usize,
    /// 1-based line number.
    pub line: u32,
    /// What went wrong.
    pub error: LexError,
}

/// A macro: `name = "value"` in the file or `-D name=value`.
#[derive(Debug, Clone)]
struct Macro {
    name: String,
    value: String,
    used: bool,
    /// Set from the command line: definitions in the file do not replace it.
    persist: bool,
}

/// Input characters: bytes, end of file, or expansion markers.
const EOF: i32 = -1;
const START_EXPAND: i32 = -2;
const DONE_EXPAND: i32 = -3;

/// One open file.
struct Source {
    name_idx: usize,
    canonical: Option<PathBuf>,
    data: Vec<u8>,
    pos: usize,
    line: u32,
    eof_reached: bool,
    unget: Vec<i32>,
}

/// The tokenizer over a stack of files.
pub struct Lexer {
    files: Vec<Source>,
    /// Every file name seen, as written (the top file as given).
    pub file_names: Vec<String>,
    macros: Vec<Macro>,
    expanding: bool,
    /// Lexical errors, in order.
    pub diags: Vec<LexDiag>,
}

fn allowed_to_end_number(c: i32) -> bool {
    matches!(
        c,
        0x20 | 0x09 | 0x0a | 0x0b | 0x0c | 0x0d | 0x29 /* ) */ | 0x2c /* , */ | 0x2f /* / */ | 0x7d /* } */ | 0x3d /* = */
    )
}

fn is_alnum(c: i32) -> bool {
    (0..=127).contains(&c) && (c as u8).is_ascii_alphanumeric()
}

fn allowed_in_string(c: i32) -> bool {
    if is_alnum(c) {
        return true;
    }
    if !(0..=127).contains(&c) {
        return false;
    }
    let b = c as u8;
    b.is_ascii_punctuation() && !matches!(b, b'(' | b')' | b'{' | b'}' | b'!' | b'=' | b'#' | b',')
}

impl Lexer {
    /// A lexer reading `text` as the top file `name`, with `-D` macros.
    pub fn new(name: &str, text: Vec<u8>, defines: &[(String, String)]) -> Self {
        let mut lexer = Lexer {
            files: Vec::new(),
            file_names: vec![name.to_string()],
            macros: Vec::new(),
            expanding: false,
            diags: Vec::new(),
        };
        lexer.files.push(Source {
            name_idx: 0,
            canonical: std::fs::canonicalize(name).ok(),
            data: text,
            pos: 0,
            line: 1,
            eof_reached: false,
            unget: Vec::new(),
        });
        for (n, v) in defines {
            lexer.set_macro(n, v, true);
        }
        lexer
    }

    /// Define a macro; a persistent (`-D`) one is never replaced by the file.
    pub fn set_macro(&mut self, name: &str, value: &str, persist: bool) {
        if let Some(m) = self.macros.iter_mut().find(|m| m.name == name) {
            if m.persist {
                return;
            }
            m.value = value.to_string();
            m.used = false;
            m.persist = persist;
            return;
        }
        self.macros.push(Macro {
            name: name.to_string(),
            value: value.to_string(),
            used: false,
            persist,
        });
    }

    /// Names of macros that were never expanded, in definition order.
    pub fn unused_macros(&self) -> Vec<String> {
        self.macros
            .iter()
            .filter(|m| !m.used)
            .map(|m| m.name.clone())
            .collect()
    }

    /// Start reading `path` (relative to the current directory, as vmd)
    /// until its end, then continue with the current file.
    pub fn push_file(&mut self, path: &str) -> Result<(), LexError> {
        if self.files.len() >= MAX_INCLUDE_DEPTH {
            return Err(LexError::IncludeDepth(path.to_string()));
        }
        let canonical = std::fs::canonicalize(path).ok();
        if let Some(c) = &canonical {
            let open: HashSet<&Path> = self
                .files
                .iter()
                .filter_map(|f| f.canonical.as_deref())
                .collect();
            if open.contains(c.as_path()) {
                return Err(LexError::IncludeRecursion(path.to_string()));
            }
        }
        let data = crate::util::read_config_file(Path::new(path))
            .map_err(|e| LexError::Include(path.to_string(), crate::util::io_reason(&e)))?;
        self.file_names.push(path.to_string());
        self.files.push(Source {
            name_idx: self.file_names.len() - 1,
            canonical,
            data,
            pos: 0,
            line: 1,
            eof_reached: false,
            unget: Vec::new(),
        });
        Ok(())
    }

    fn cur(&mut self) -> &mut Source {
        // The top file is never popped, so the stack is never empty.
        let last = self.files.len() - 1;
        &mut self.files[last]
    }

    /// The current file index and line.
    fn here(&self) -> (usize, u32) {
        let f = &self.files[self.files.len() - 1];
        (f.name_idx, f.line)
    }

    fn report(&mut self, error: LexError) {
        let (file, line) = self.here();
        self.diags.push(LexDiag { file, line, error });
    }

    /// Next raw character of the current file, handling expansion markers.
    fn igetc(&mut self) -> i32 {
        loop {
            let src = self.cur();
            let c = if let Some(c) = src.unget.pop() {
                c
            } else if let Some(&b) = src.data.get(src.pos) {
                src.pos += 1;
                i32::from(b)
            } else {
                EOF
            };
            match c {
                START_EXPAND => self.expanding = true,
                DONE_EXPAND => self.expanding = false,
                _ => return c,
            }
        }
    }

    fn lungetc(&mut self, c: i32) {
        if c != EOF {
            self.cur().unget.push(c);
        }
    }

    /// Leave the current (included) file; false at the top file.
    fn popfile(&mut self) -> bool {
        if self.files.len() <= 1 {
            return false;
        }
        self.files.pop();
        true
    }

    /// Next character with quoting rules: outside quotes a backslash-newline
    /// joins lines and the end of each file reads as one newline first.
    fn lgetc(&mut self, quote: Option<i32>) -> i32 {
        if let Some(q) = quote {
            let c = self.igetc();
            if c == EOF {
                self.report(LexError::UnterminatedQuote);
                if !self.popfile() {
                    return EOF;
                }
                return q;
            }
            return c;
        }
        let mut c = self.igetc();
        while c == i32::from(b'\\') {
            let next = self.igetc();
            if next != i32::from(b'\n') {
                c = next;
                break;
            }
            self.cur().line += 1;
            c = self.igetc();
        }
        if c == EOF {
            // One newline at the end of every file keeps line counts right
            // when the last line has none.
            if !self.cur().eof_reached {
                self.cur().eof_reached = true;
                return i32::from(b'\n');
            }
            while c == EOF {
                if !self.popfile() {
                    return EOF;
                }
                c = self.igetc();
            }
        }
        c
    }

    /// Skip to the end of the line after an error.
    fn findeol(&mut self) -> Tok {
        loop {
            let c = self.lgetc(None);
            if c == i32::from(b'\n') {
                self.cur().line += 1;
                break;
            }
            if c == EOF {
                break;
            }
        }
        Tok::Error
    }

    /// Read the next token.
    pub fn next_token(&mut self) -> Token {
        loop {
            let mut c = self.lgetc(None);
            while c == i32::from(b' ') || c == i32::from(b'\t') {
                c = self.lgetc(None);
            }
            let (file, line) = self.here();
            let tok = |tok| Token { tok, file, line };
            if c == i32::from(b'#') {
                while c != i32::from(b'\n') && c != EOF {
                    c = self.lgetc(None);
                }
            }
            if c == i32::from(b'$') && !self.expanding {
                let mut name = String::new();
                loop {
                    let c = self.lgetc(None);
                    if c == EOF {
                        return tok(Tok::Eof);
                    }
                    if name.len() >= MAX_TOKEN {
                        self.report(LexError::StringTooLong);
                        return tok(self.findeol());
                    }
                    if is_alnum(c) || c == i32::from(b'_') {
                        name.push(c as u8 as char);
                        continue;
                    }
                    self.lungetc(c);
                    break;
                }
                let Some(m) = self.macros.iter_mut().find(|m| m.name == name) else {
                    self.report(LexError::UndefinedMacro(name));
                    return tok(self.findeol());
                };
                m.used = true;
                let value: Vec<u8> = m.value.clone().into_bytes();
                self.lungetc(DONE_EXPAND);
                for &b in value.iter().rev() {
                    self.lungetc(i32::from(b));
                }
                self.lungetc(START_EXPAND);
                continue;
            }
            if c == i32::from(b'\'') || c == i32::from(b'"') {
                return tok(self.quoted(c));
            }
            if c == i32::from(b'-') || (0x30..=0x39).contains(&c) {
                let mut buf = vec![c as u8];
                let mut n;
                loop {
                    n = self.lgetc(None);
                    if !(0x30..=0x39).contains(&n) {
                        break;
                    }
                    buf.push(n as u8);
                    if buf.len() >= MAX_TOKEN {
                        self.report(LexError::StringTooLong);
                        return tok(self.findeol());
                    }
                }
                self.lungetc(n);
                let digits = buf.len() > 1 || buf[0] != b'-';
                if digits && (n == EOF || allowed_to_end_number(n)) {
                    let text = String::from_utf8_lossy(&buf).into_owned();
                    return match text.parse::<i64>() {
                        Ok(v) => tok(Tok::Num(v)),
                        Err(_) => {
                            let why = if buf[0] == b'-' {
                                "too small"
                            } else {
                                "too large"
                            };
                            self.report(LexError::InvalidNumber(text, why));
                            tok(self.findeol())
                        }
                    };
                }
                // Not a number: push back all but the first character and
                // read it as a word (or a lone '-').
                for &b in buf[1..].iter().rev() {
                    self.lungetc(i32::from(b));
                }
                if buf[0] == b'-' {
                    return tok(Tok::Char(b'-'));
                }
            }
            if is_alnum(c) || c == i32::from(b':') || c == i32::from(b'_') || c == i32::from(b'/') {
                let mut buf = vec![c as u8];
                loop {
                    let n = self.lgetc(None);
                    if !allowed_in_string(n) {
                        self.lungetc(n);
                        break;
                    }
                    buf.push(n as u8);
                    if buf.len() >= MAX_TOKEN {
                        self.report(LexError::StringTooLong);
                        return tok(self.findeol());
                    }
                }
                let word = String::from_utf8_lossy(&buf).into_owned();
                return tok(match lookup(&word) {
                    Some(k) => Tok::Kw(k),
                    None => Tok::Str(word),
                });
            }
            if c == i32::from(b'\n') {
                self.cur().line += 1;
            }
            if c == EOF {
                // The end-of-file newline already counted a line.
                return Token {
                    tok: Tok::Eof,
                    file,
                    line: line.saturating_sub(1).max(1),
                };
            }
            return tok(Tok::Char(c as u8));
        }
    }

    /// The rest of a quoted string whose opening quote was `q`.
    fn quoted(&mut self, q: i32) -> Tok {
        let mut buf: Vec<u8> = Vec::new();
        loop {
            let mut c = self.lgetc(Some(q));
            if c == EOF {
                // Already reported as an unterminated string.
                return Tok::Error;
            }
            if c == i32::from(b'\n') {
                self.cur().line += 1;
                continue;
            } else if c == i32::from(b'\\') {
                let next = self.lgetc(Some(q));
                if next == EOF {
                    return Tok::Error;
                }
                if next == q || next == i32::from(b' ') || next == i32::from(b'\t') {
                    c = next;
                } else if next == i32::from(b'\n') {
                    self.cur().line += 1;
                    continue;
                } else {
                    self.lungetc(next);
                }
            } else if c == q {
                break;
            } else if c == 0 {
                self.report(LexError::NulInString);
                return self.findeol();
            }
            if buf.len() + 1 >= MAX_TOKEN {
                self.report(LexError::StringTooLong);
                return self.findeol();
            }
            // Expansion markers never appear inside quotes (no expansion
            // there), so every c here is a byte.
            buf.push(c as u8);
        }
        Tok::Str(String::from_utf8_lossy(&buf).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(text: &str) -> Vec<Tok> {
        toks_with(text, &[])
    }

    fn toks_with(text: &str, defs: &[(String, String)]) -> Vec<Tok> {
        let mut l = Lexer::new("t.conf", text.as_bytes().to_vec(), defs);
        let mut out = Vec::new();
        loop {
            let t = l.next_token();
            if t.tok == Tok::Eof {
                break;
            }
            out.push(t.tok);
        }
        out
    }

    fn s(x: &str) -> Tok {
        Tok::Str(x.into())
    }
    const NL: Tok = Tok::Char(b'\n');

    #[test]
    fn keyword_table_is_sorted() {
        for w in KEYWORDS.windows(2) {
            assert!(w[0].0 < w[1].0, "{} !< {}", w[0].0, w[1].0);
        }
        for (name, kw) in KEYWORDS {
            assert_eq!(lookup(name), Some(*kw));
        }
        assert_eq!(lookup("vmx"), None);
    }

    #[test]
    fn words_numbers_keywords_and_punctuation() {
        assert_eq!(
            toks("vm \"a b\" { memory 512M }\n"),
            vec![
                Tok::Kw(Kw::Vm),
                s("a b"),
                Tok::Char(b'{'),
                Tok::Kw(Kw::Memory),
                s("512M"),
                Tok::Char(b'}'),
                NL,
                NL
            ]
        );
        assert_eq!(
            toks("42 -7 10.0.0.0/8"),
            vec![Tok::Num(42), Tok::Num(-7), s("10.0.0.0/8"), NL]
        );
        assert_eq!(toks("- x"), vec![Tok::Char(b'-'), s("x"), NL]);
        assert_eq!(toks("fe:e1:ba:d0:00:01"), vec![s("fe:e1:ba:d0:00:01"), NL]);
        assert_eq!(toks("00:11:22:33:44:55"), vec![s("00:11:22:33:44:55"), NL]);
    }

    #[test]
    fn comments_and_continuation() {
        assert_eq!(
            toks("# c\nvm x # trailing\nboot \\\n /bsd\n"),
            vec![
                NL,
                Tok::Kw(Kw::Vm),
                s("x"),
                NL,
                Tok::Kw(Kw::Boot),
                s("/bsd"),
                NL,
                NL
            ]
        );
    }

    #[test]
    fn continuation_counts_lines() {
        let mut l = Lexer::new("t", b"a \\\nb\nc".to_vec(), &[]);
        let lines: Vec<u32> = (0..4).map(|_| l.next_token().line).collect();
        assert_eq!(lines, vec![1, 2, 2, 3]);
    }

    #[test]
    fn quoted_escapes() {
        assert_eq!(
            toks(r#""a\"b" 'c\ d' "e\x""#),
            vec![s("a\"b"), s("c d"), s("e\\x"), NL]
        );
    }

    #[test]
    fn macros_expand_outside_quotes_only() {
        let d = vec![("m".to_string(), "512M".to_string())];
        assert_eq!(
            toks_with("memory $m \"$m\"", &d),
            vec![Tok::Kw(Kw::Memory), s("512M"), s("$m"), NL]
        );
    }

    #[test]
    fn macro_values_are_relexed_but_not_reexpanded() {
        let d = vec![
            ("two".to_string(), "disk 7".to_string()),
            ("self".to_string(), "$self".to_string()),
        ];
        assert_eq!(
            toks_with("$two", &d),
            vec![Tok::Kw(Kw::Disk), Tok::Num(7), NL]
        );
        assert_eq!(toks_with("$self", &d), vec![Tok::Char(b'$'), s("self"), NL]);
    }

    #[test]
    fn undefined_macro_reports_and_skips_line() {
        let mut l = Lexer::new("t", b"a $nope b\nc\n".to_vec(), &[]);
        assert_eq!(l.next_token().tok, s("a"));
        assert_eq!(l.next_token().tok, Tok::Error);
        let c = l.next_token();
        assert_eq!((c.tok, c.line), (s("c"), 2));
        assert_eq!(l.diags[0].error, LexError::UndefinedMacro("nope".into()));
    }

    #[test]
    fn huge_number_is_an_error() {
        let mut l = Lexer::new("t", b"99999999999999999999\n".to_vec(), &[]);
        assert_eq!(l.next_token().tok, Tok::Error);
        assert_eq!(
            l.diags[0].error.to_string(),
            "\"99999999999999999999\" invalid number: too large"
        );
    }

    #[test]
    fn unterminated_quote_is_reported() {
        let mut l = Lexer::new("t", b"\"abc".to_vec(), &[]);
        assert_eq!(l.next_token().tok, Tok::Error);
        assert_eq!(l.diags[0].error, LexError::UnterminatedQuote);
    }

    #[test]
    fn persistent_macros_win() {
        let mut l = Lexer::new("t", Vec::new(), &[("a".into(), "1".into())]);
        l.set_macro("a", "2", false);
        l.set_macro("b", "3", false);
        l.set_macro("b", "4", false);
        assert_eq!(l.macros[0].value, "1");
        assert_eq!(l.macros[1].value, "4");
        assert_eq!(l.unused_macros(), vec!["a".to_string(), "b".to_string()]);
    }
}
