//! The vm.conf grammar: statements, blocks and their options, turned into a
//! [`Config`] (parse.y's yacc grammar and its actions).
//!
//! Errors are collected rather than fatal: a bad option is reported and
//! parsing goes on with the next line, as yacc's `error '\n'` recovery does,
//! so one run shows every mistake of a file.

use std::path::PathBuf;

use thiserror::Error;

use crate::diag::{ConfigError, Diag, Diagnostic, Location, Warning, WarningKind};
use crate::lex::{Kw, Lexer, Tok, Token};
use crate::owner::{self, OwnerError};
use crate::types::{
    BootDevice, Config, DiskConf, DiskFormat, IfConf, Owner, SwitchConf, VmConf, RT_TABLEID_MAX,
    VM_MAX_DISKS_PER_VM, VM_MAX_NICS_PER_VM, VM_MAX_VCPUS,
};
use crate::util::{self, ValueError};

/// Longest kernel command line (Linux x86 `COMMAND_LINE_SIZE` minus the NUL).
pub const CMDLINE_MAX: usize = 2047;

/// A grammar or value error (parse.y's `yyerror` messages where it has one).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Unexpected token.
    #[error("syntax error")]
    Syntax,
    /// A quoted macro name with blanks.
    #[error("macro name cannot contain whitespace")]
    MacroNameWhitespace,
    /// A macro name other than letters, digits and underscores: it could
    /// never be expanded.
    #[error("invalid macro name \"{0}\"")]
    MacroName(String),
    /// Bad `local prefix`.
    #[error("invalid local prefix: {0}")]
    LocalPrefix(String),
    /// Bad `local inet6 prefix`.
    #[error("invalid local inet6 prefix: {0}")]
    LocalPrefix6(String),
    /// An owner that does not resolve.
    #[error(transparent)]
    Owner(#[from] OwnerError),
    /// OpenBSD-only features (`agentx`, `sev`, `seves`).
    #[error("{0} is not supported on this platform")]
    NotSupported(&'static str),
    /// `staggered start parallel` below 1 or too large.
    #[error("invalid parallelism: {0}")]
    Parallel(i64),
    /// `staggered start delay` negative or too large.
    #[error("invalid delay: {0}")]
    Delay(i64),
    /// `user limit` value out of range.
    #[error("invalid user limit {0}: {1}")]
    UserLimit(&'static str, i64),
    /// A switch without `interface`.
    #[error("switch \"{0}\" is missing interface name")]
    SwitchMissingInterface(String),
    /// A switch name too long or with bad characters.
    #[error("invalid switch name: {0}")]
    SwitchName(String),
    /// A bad interface group.
    #[error("invalid group name: {0}")]
    Group(String),
    /// A bad bridge device name.
    #[error("invalid switch interface: {0}")]
    SwitchInterface(String),
    /// A bridge device name longer than IFNAMSIZ.
    #[error("switch interface too long: {0}")]
    SwitchInterfaceTooLong(String),
    /// `rdomain` out of range.
    #[error("invalid rdomain: {0}")]
    Rdomain(i64),
    /// VM name of 64 bytes or more.
    #[error("vm name too long")]
    VmNameTooLong,
    /// Instance parent name of 64 bytes or more.
    #[error("vm {0} name too long")]
    ParentNameTooLong(String),
    /// VM name with bad characters.
    #[error("invalid VM name: {0}")]
    VmName(String),
    /// More than four NICs, or `interfaces` out of range.
    #[error("too many interfaces: {0}")]
    TooManyInterfaces(i64),
    /// A bad tap device name.
    #[error("invalid interface: {0}")]
    Interface(String),
    /// A tap device name longer than IFNAMSIZ.
    #[error("interface name too long: {0}")]
    InterfaceNameTooLong(String),
    /// An interface's switch name that cannot be a switch name.
    #[error("switch name too long: {0}")]
    InterfaceSwitchTooLong(String),
    /// A bad MAC address.
    #[error("invalid address: {0}")]
    Lladdr(String),
    /// Second `boot PATH`.
    #[error("kernel specified more than once")]
    KernelTwice,
    /// `boot PATH` that does not resolve.
    #[error("kernel path not found: {0}: {1}")]
    KernelNotFound(String, String),
    /// Second `cdrom`.
    #[error("cdrom specified more than once")]
    CdromTwice,
    /// `cdrom PATH` that does not resolve.
    #[error("cdrom path not found: {0}: {1}")]
    CdromNotFound(String, String),
    /// Second `initrd`.
    #[error("initrd specified more than once")]
    InitrdTwice,
    /// `initrd PATH` that does not resolve.
    #[error("initrd path not found: {0}: {1}")]
    InitrdNotFound(String, String),
    /// Second `cmdline`.
    #[error("cmdline specified more than once")]
    CmdlineTwice,
    /// A command line the kernel cannot take.
    #[error("cmdline too long: {0} bytes (at most 2047)")]
    CmdlineTooLong(usize),
    /// Second `interfaces N`.
    #[error("interfaces specified more than once")]
    InterfacesTwice,
    /// Second `memory`.
    #[error("memory specified more than once")]
    MemoryTwice,
    /// A size that is not a size, or under 1 MiB.
    #[error("failed to parse size: {0}: {1}")]
    Size(String, ValueError),
    /// Second `cpus`.
    #[error("cpus specified more than once")]
    CpusTwice,
    /// `cpus` out of 1..=255.
    #[error("invalid number of cpus: {0}")]
    Cpus(i64),
    /// `format` other than raw or qcow2.
    #[error("unrecognized disk format {0}")]
    DiskFormat(String),
    /// The same image twice in one VM.
    #[error("disk {0} specified more than once")]
    DiskTwice(String),
    /// A disk that cannot be added.
    #[error("failed to parse disks: {0}: {1}")]
    Disk(String, String),
}

/// Why parsing of the current statement stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// A syntax error was reported; skip the rest of the line.
    Syntax,
    /// The lexer reported an error and already skipped its line.
    Lexed,
    /// The file ended inside a statement.
    Eof,
}

type PResult<T> = Result<T, Stop>;

/// The result of parsing one file (with its includes).
#[derive(Debug)]
pub struct Parsed {
    /// Everything that parsed without error.
    pub config: Config,
    /// Where each of `config.vms` was declared.
    pub vm_locs: Vec<Location>,
    /// Where each of `config.switches` was declared.
    pub switch_locs: Vec<Location>,
    /// Errors and warnings in order.
    pub diags: Vec<Diag>,
    /// Macros never expanded.
    pub unused_macros: Vec<String>,
}

struct Parser {
    lex: Lexer,
    peeked: Vec<Token>,
    config: Config,
    vm_locs: Vec<Location>,
    switch_locs: Vec<Location>,
    diags: Vec<Diag>,
    errors: usize,
}

/// Parse `text` as the file `name` with `-D` macros `defines`.
pub fn parse(name: &str, text: Vec<u8>, defines: &[(String, String)]) -> Parsed {
    let mut p = Parser {
        lex: Lexer::new(name, text, defines),
        peeked: Vec::new(),
        config: Config::default(),
        vm_locs: Vec::new(),
        switch_locs: Vec::new(),
        diags: Vec::new(),
        errors: 0,
    };
    p.grammar();
    Parsed {
        unused_macros: p.lex.unused_macros(),
        config: p.config,
        vm_locs: p.vm_locs,
        switch_locs: p.switch_locs,
        diags: p.diags,
    }
}

fn is_char(t: &Token, c: u8) -> bool {
    t.tok == Tok::Char(c)
}

impl Parser {
    fn next(&mut self) -> Token {
        if let Some(t) = self.peeked.pop() {
            return t;
        }
        let t = self.lex.next_token();
        for d in std::mem::take(&mut self.lex.diags) {
            let location = Some(Location {
                file: self.lex.file_names[d.file].clone(),
                line: d.line,
            });
            self.push_error(location, d.error.into());
        }
        t
    }

    fn peek(&mut self) -> &Token {
        if self.peeked.is_empty() {
            let t = self.next();
            self.peeked.push(t);
        }
        &self.peeked[self.peeked.len() - 1]
    }

    fn unread(&mut self, t: Token) {
        self.peeked.push(t);
    }

    fn loc(&self, t: &Token) -> Location {
        Location {
            file: self.lex.file_names[t.file].clone(),
            line: t.line,
        }
    }

    fn push_error(&mut self, location: Option<Location>, error: ConfigError) {
        self.errors += 1;
        self.diags.push(Diag::Error(Diagnostic { location, error }));
    }

    fn error(&mut self, at: &Token, e: ParseError) {
        let loc = self.loc(at);
        self.push_error(Some(loc), e.into());
    }

    fn warn(&mut self, at: &Token, w: WarningKind) {
        let loc = self.loc(at);
        self.diags.push(Diag::Warning(Warning::At(loc, w)));
    }

    /// Report `t` as unexpected and say how to recover.
    fn unexpected(&mut self, t: Token) -> Stop {
        match t.tok {
            Tok::Error => Stop::Lexed,
            Tok::Eof => {
                self.error(&t, ParseError::Syntax);
                self.unread(t);
                Stop::Eof
            }
            // Recovery needs to see these: line and block boundaries.
            Tok::Char(b'\n') | Tok::Char(b'{') | Tok::Char(b'}') => {
                self.error(&t, ParseError::Syntax);
                self.unread(t);
                Stop::Syntax
            }
            _ => {
                self.error(&t, ParseError::Syntax);
                Stop::Syntax
            }
        }
    }

    fn expect_char(&mut self, c: u8) -> PResult<Token> {
        let t = self.next();
        if is_char(&t, c) {
            Ok(t)
        } else {
            Err(self.unexpected(t))
        }
    }

    fn expect_kw(&mut self, k: Kw) -> PResult<Token> {
        let t = self.next();
        if t.tok == Tok::Kw(k) {
            Ok(t)
        } else {
            Err(self.unexpected(t))
        }
    }

    fn peek_kw(&mut self, k: Kw) -> bool {
        self.peek().tok == Tok::Kw(k)
    }

    /// parse.y's `string`: one or more adjacent words, concatenated.
    fn string(&mut self) -> PResult<(String, Token)> {
        let t = self.next();
        let Tok::Str(mut s) = t.tok.clone() else {
            return Err(self.unexpected(t));
        };
        while matches!(self.peek().tok, Tok::Str(_)) {
            if let Tok::Str(more) = self.next().tok {
                s.push_str(&more);
            }
        }
        Ok((s, t))
    }

    /// A single word (parse.y's `STRING` token).
    fn word(&mut self) -> PResult<(String, Token)> {
        let t = self.next();
        match t.tok.clone() {
            Tok::Str(s) => Ok((s, t)),
            _ => Err(self.unexpected(t)),
        }
    }

    fn number(&mut self) -> PResult<(i64, Token)> {
        let t = self.next();
        match t.tok {
            Tok::Num(n) => Ok((n, t)),
            _ => Err(self.unexpected(t)),
        }
    }

    fn end_of_line(&mut self) -> PResult<()> {
        let t = self.next();
        match t.tok {
            Tok::Char(b'\n') => Ok(()),
            Tok::Eof => {
                self.unread(t);
                Ok(())
            }
            _ => Err(self.unexpected(t)),
        }
    }

    /// Skip the rest of a statement after a syntax error: to the end of the
    /// line, or past the matching `}` if a block opens on it, so that the
    /// options of a block with a bad header are not read as statements.
    fn skip_line(&mut self) {
        let mut depth = 0u32;
        loop {
            let t = self.next();
            match t.tok {
                Tok::Char(b'\n') if depth == 0 => return,
                Tok::Error if depth == 0 => return,
                Tok::Char(b'{') => depth += 1,
                Tok::Char(b'}') => depth = depth.saturating_sub(1),
                Tok::Eof => {
                    self.unread(t);
                    return;
                }
                _ => {}
            }
        }
    }

    /// Recover inside an inner block (`interface { ... }`, `allow instance
    /// { ... }`): a syntax error skips to the end of its line or to the
    /// block's `}`; the end of the file still ends everything.
    fn recover_inner(&mut self, r: PResult<()>) -> PResult<()> {
        match r {
            Ok(()) | Err(Stop::Lexed) => Ok(()),
            Err(Stop::Syntax) => {
                self.skip_in_block();
                Ok(())
            }
            Err(Stop::Eof) => Err(Stop::Eof),
        }
    }

    /// Skip the rest of a line inside a block, stopping before its `}`;
    /// a block that opens on the line is skipped whole.
    fn skip_in_block(&mut self) {
        let mut depth = 0u32;
        loop {
            let t = self.next();
            match t.tok {
                Tok::Char(b'\n') if depth == 0 => return,
                Tok::Error if depth == 0 => return,
                Tok::Char(b'{') => depth += 1,
                Tok::Char(b'}') if depth > 0 => depth -= 1,
                Tok::Char(b'}') | Tok::Eof => {
                    self.unread(t);
                    return;
                }
                _ => {}
            }
        }
    }

    fn grammar(&mut self) {
        loop {
            let t = self.next();
            let is_include = t.tok == Tok::Kw(Kw::Include);
            let r = match t.tok {
                Tok::Eof => return,
                Tok::Char(b'\n') | Tok::Error => continue,
                Tok::Kw(Kw::Include) => self.include(),
                Tok::Str(_) => self.varset(t),
                Tok::Kw(Kw::Local) => self.local(),
                Tok::Kw(Kw::Socket) => self.socket_owner(),
                Tok::Kw(Kw::Staggered) => self.staggered(),
                Tok::Kw(Kw::Agentx) => self.agentx(t),
                Tok::Kw(Kw::User) => self.user_limit(),
                Tok::Kw(Kw::Switch) => self.switch(t),
                Tok::Kw(Kw::Vm) => self.vm(t),
                _ => Err(self.unexpected(t)),
            };
            let r = if is_include {
                r
            } else {
                r.and_then(|()| self.end_of_line())
            };
            match r {
                Ok(()) | Err(Stop::Lexed) => {}
                Err(Stop::Syntax) => self.skip_line(),
                Err(Stop::Eof) => return,
            }
        }
    }

    /// `include "file"`: read it next, relative to the current directory.
    fn include(&mut self) -> PResult<()> {
        let (path, at) = self.string()?;
        self.end_of_line()?;
        if let Err(e) = self.lex.push_file(&path) {
            let loc = self.loc(&at);
            self.push_error(Some(loc), e.into());
        }
        Ok(())
    }

    /// `name = "value"`.
    fn varset(&mut self, name_tok: Token) -> PResult<()> {
        let Tok::Str(name) = name_tok.tok.clone() else {
            return Err(self.unexpected(name_tok));
        };
        self.expect_char(b'=')?;
        let t = self.next();
        let value = match &t.tok {
            Tok::Str(s) => s.clone(),
            Tok::Num(n) => n.to_string(),
            _ => return Err(self.unexpected(t)),
        };
        if name.chars().any(char::is_whitespace) {
            self.error(&name_tok, ParseError::MacroNameWhitespace);
            return Ok(());
        }
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            self.error(&name_tok, ParseError::MacroName(name));
            return Ok(());
        }
        self.lex.set_macro(&name, &value, false);
        Ok(())
    }

    /// `local prefix P` and `local inet6 [prefix P]`.
    fn local(&mut self) -> PResult<()> {
        let t = self.next();
        match t.tok {
            Tok::Kw(Kw::Prefix) => {
                let (text, at) = self.word()?;
                match util::parse_prefix4(&text) {
                    Some(p) => self.config.global.local_prefix = p,
                    None => self.error(&at, ParseError::LocalPrefix(text)),
                }
            }
            Tok::Kw(Kw::Inet6) => {
                if self.peek_kw(Kw::Prefix) {
                    self.next();
                    let (text, at) = self.word()?;
                    match util::parse_prefix6(&text) {
                        Some(p) => self.config.global.local_prefix6 = Some(p),
                        None => self.error(&at, ParseError::LocalPrefix6(text)),
                    }
                } else if self.config.global.local_prefix6.is_none() {
                    self.config.global.local_prefix6 = Some(crate::types::Ipv6Net::DEFAULT);
                }
            }
            _ => return Err(self.unexpected(t)),
        }
        Ok(())
    }

    /// parse.y's `owner_id`: a uid, `user[:group]` or `:group`. `None` after
    /// reporting an owner that does not resolve.
    fn owner_id(&mut self) -> PResult<Option<Owner>> {
        let t = self.next();
        let r = match &t.tok {
            Tok::Num(n) => owner::owner_from_uid(*n),
            Tok::Str(s) => owner::owner_from_names(s),
            _ => return Err(self.unexpected(t)),
        };
        match r {
            Ok(o) => Ok(Some(o)),
            Err(e) => {
                self.error(&t, e.into());
                Ok(None)
            }
        }
    }

    /// `socket owner user[:group]`.
    fn socket_owner(&mut self) -> PResult<()> {
        self.expect_kw(Kw::Owner)?;
        if let Some(o) = self.owner_id()? {
            self.config.global.socket_owner = Some(o);
        }
        Ok(())
    }

    /// `staggered start parallel N delay S`.
    fn staggered(&mut self) -> PResult<()> {
        self.expect_kw(Kw::Start)?;
        self.expect_kw(Kw::Parallel)?;
        let (parallel, pt) = self.number()?;
        self.expect_kw(Kw::Delay)?;
        let (delay, dt) = self.number()?;
        let p = u32::try_from(parallel).ok().filter(|&p| p >= 1);
        let d = u32::try_from(delay).ok();
        match p {
            Some(_) => {}
            None => self.error(&pt, ParseError::Parallel(parallel)),
        }
        match d {
            Some(_) => {}
            None => self.error(&dt, ParseError::Delay(delay)),
        }
        if let (Some(p), Some(d)) = (p, d) {
            self.config.global.staggered.parallel = Some(p);
            self.config.global.staggered.delay = d;
        }
        Ok(())
    }

    /// `agentx [context C] [path P]`: parsed, then refused.
    fn agentx(&mut self, at: Token) -> PResult<()> {
        loop {
            if self.peek_kw(Kw::Context) || self.peek_kw(Kw::Path) {
                self.next();
                self.string()?;
            } else {
                break;
            }
        }
        self.error(&at, ParseError::NotSupported("agentx"));
        Ok(())
    }

    /// A size: a number of bytes or a scaled string, at least 1 MiB, in MiB.
    fn size_mib(&mut self) -> PResult<Option<(u64, Token)>> {
        let t = self.next();
        let (text, bytes) = match &t.tok {
            Tok::Num(n) => (n.to_string(), Ok(*n)),
            Tok::Str(s) => (s.clone(), util::scan_scaled(s)),
            _ => return Err(self.unexpected(t)),
        };
        match bytes.and_then(util::parse_size_mib) {
            Ok((mib, rounded)) => {
                if rounded {
                    self.warn(&t, WarningKind::SizeRounded(mib));
                }
                Ok(Some((mib, t)))
            }
            Err(e) => {
                self.error(&t, ParseError::Size(text, e));
                Ok(None)
            }
        }
    }

    /// `user limit [cpus N] [memory SIZE] [interfaces N]` (our extension).
    fn user_limit(&mut self) -> PResult<()> {
        self.expect_kw(Kw::Limit)?;
        let mut any = false;
        while let Tok::Kw(kw @ (Kw::Cpus | Kw::Memory | Kw::Interfaces)) = self.peek().tok {
            self.next();
            any = true;
            if kw == Kw::Memory {
                if let Some((mib, _)) = self.size_mib()? {
                    self.config.global.user_limits.max_mem_mib = mib;
                }
                continue;
            }
            let (n, at) = self.number()?;
            let what = if kw == Kw::Cpus { "cpus" } else { "interfaces" };
            match u32::try_from(n) {
                Ok(v) if kw == Kw::Cpus => self.config.global.user_limits.max_cpus = v,
                Ok(v) => self.config.global.user_limits.max_ifs = v,
                Err(_) => self.error(&at, ParseError::UserLimit(what, n)),
            }
        }
        if !any {
            let t = self.next();
            return Err(self.unexpected(t));
        }
        Ok(())
    }

    /// Options of a `{ ... }` block, one per line, until `}`. The opening
    /// brace has been read.
    fn block<S>(
        &mut self,
        state: &mut S,
        mut option: impl FnMut(&mut Self, &mut S, Token) -> PResult<()>,
    ) -> PResult<()> {
        loop {
            let t = self.next();
            match t.tok {
                Tok::Char(b'\n') | Tok::Error => continue,
                Tok::Char(b'}') => return Ok(()),
                Tok::Eof => return Err(self.unexpected(t)),
                _ => {}
            }
            let r = option(self, state, t).and_then(|()| {
                let n = self.next();
                if is_char(&n, b'\n') || is_char(&n, b'}') {
                    self.unread(n);
                    Ok(())
                } else {
                    Err(self.unexpected(n))
                }
            });
            match r {
                Ok(()) | Err(Stop::Lexed) => {}
                Err(Stop::Syntax) => self.skip_in_block(),
                Err(Stop::Eof) => return Err(Stop::Eof),
            }
        }
    }

    /// `switch NAME { ... }`.
    fn switch(&mut self, kw: Token) -> PResult<()> {
        let errors = self.errors;
        let (name, at) = self.string()?;
        if !util::name_fits(&name) || !util::valid_vm_name(&name) {
            self.error(&at, ParseError::SwitchName(name.clone()));
        }
        self.expect_char(b'{')?;
        let mut sw = SwitchConf {
            name,
            enabled: true,
            group: None,
            ifname: String::new(),
            locked_lladdr: false,
            rdomain: None,
            up: true,
            line: kw.line,
        };
        self.block(&mut sw, Self::switch_option)?;
        if sw.ifname.is_empty() {
            self.error(&kw, ParseError::SwitchMissingInterface(sw.name.clone()));
        }
        if self.errors == errors {
            self.switch_locs.push(self.loc(&kw));
            self.config.switches.push(sw);
        }
        Ok(())
    }

    fn switch_option(&mut self, sw: &mut SwitchConf, t: Token) -> PResult<()> {
        match t.tok {
            Tok::Kw(Kw::Enable) => sw.enabled = true,
            Tok::Kw(Kw::Disable) => sw.enabled = false,
            Tok::Kw(Kw::Group) => {
                if let Some(g) = self.group()? {
                    sw.group = Some(g);
                }
            }
            Tok::Kw(Kw::Interface) => {
                let (ifname, at) = self.string()?;
                if ifname.len() > crate::types::IF_NAME_MAX {
                    self.error(&at, ParseError::SwitchInterfaceTooLong(ifname));
                } else if !util::valid_ifname(&ifname) {
                    self.error(&at, ParseError::SwitchInterface(ifname));
                } else {
                    sw.ifname = ifname;
                }
            }
            Tok::Kw(Kw::Locked) => {
                self.expect_kw(Kw::Lladdr)?;
                sw.locked_lladdr = true;
            }
            Tok::Kw(Kw::Rdomain) => {
                if let Some(r) = self.rdomain()? {
                    sw.rdomain = Some(r);
                }
            }
            Tok::Kw(Kw::Up) => sw.up = true,
            Tok::Kw(Kw::Down) => sw.up = false,
            _ => return Err(self.unexpected(t)),
        }
        Ok(())
    }

    /// An interface group name (switches and VM interfaces), or `None`
    /// after reporting a bad one.
    fn group(&mut self) -> PResult<Option<String>> {
        let (g, at) = self.string()?;
        if util::valid_group(&g) {
            Ok(Some(g))
        } else {
            self.error(&at, ParseError::Group(g));
            Ok(None)
        }
    }

    fn rdomain(&mut self) -> PResult<Option<u32>> {
        let (n, at) = self.number()?;
        match u32::try_from(n).ok().filter(|&r| r <= RT_TABLEID_MAX) {
            Some(r) => Ok(Some(r)),
            None => {
                self.error(&at, ParseError::Rdomain(n));
                Ok(None)
            }
        }
    }

    /// `vm NAME { ... }` or `vm PARENT instance NAME { ... }`.
    fn vm(&mut self, kw: Token) -> PResult<()> {
        let errors = self.errors;
        let (first, first_at) = self.string()?;
        let (parent, name, at) = if self.peek_kw(Kw::Instance) {
            self.next();
            let (name, at) = self.string()?;
            (Some(first), name, at)
        } else {
            (None, first, first_at.clone())
        };
        if let Some(p) = &parent {
            if !util::name_fits(p) {
                self.error(&first_at, ParseError::ParentNameTooLong(p.clone()));
            }
        }
        if !util::name_fits(&name) {
            self.error(&at, ParseError::VmNameTooLong);
        } else if !util::valid_vm_name(&name) {
            self.error(&at, ParseError::VmName(name.clone()));
        }
        self.expect_char(b'{')?;
        let mut st = VmState {
            vm: VmConf::new(name),
            interfaces_set: false,
        };
        st.vm.instance_of = parent;
        st.vm.line = kw.line;
        self.block(&mut st, Self::vm_option)?;
        if self.errors == errors {
            self.vm_locs.push(self.loc(&kw));
            self.config.vms.push(st.vm);
        }
        Ok(())
    }

    /// Resolve a path as realpath(3) does, or report why not.
    fn realpath(path: &str) -> Result<PathBuf, String> {
        std::fs::canonicalize(path).map_err(|e| util::io_reason(&e))
    }

    /// Reads a path for an option that may be given once (`boot`, `cdrom`,
    /// `initrd`) and stores it resolved, or reports `twice` / `not_found`.
    fn path_once(
        &mut self,
        slot: &mut Option<PathBuf>,
        twice: ParseError,
        not_found: fn(String, String) -> ParseError,
    ) -> PResult<()> {
        let (path, at) = self.string()?;
        if slot.is_some() {
            self.error(&at, twice);
            return Ok(());
        }
        match Self::realpath(&path) {
            Ok(real) => *slot = Some(real),
            Err(why) => self.error(&at, not_found(path, why)),
        }
        Ok(())
    }

    fn vm_option(&mut self, st: &mut VmState, t: Token) -> PResult<()> {
        let vm = &mut st.vm;
        match t.tok {
            Tok::Kw(Kw::Enable) => vm.enabled = true,
            Tok::Kw(Kw::Disable) => vm.enabled = false,
            Tok::Kw(Kw::Disk) => {
                let (path, at) = self.string()?;
                let mut format = None;
                if self.peek_kw(Kw::Format) {
                    self.next();
                    let (f, fat) = self.string()?;
                    match f.to_ascii_lowercase().as_str() {
                        "raw" => format = Some(DiskFormat::Raw),
                        "qcow2" => format = Some(DiskFormat::Qcow2),
                        _ => {
                            self.error(&fat, ParseError::DiskFormat(f));
                            return Ok(());
                        }
                    }
                }
                if vm.disks.len() >= VM_MAX_DISKS_PER_VM {
                    self.error(&at, ParseError::Disk(path, "too many disks".into()));
                    return Ok(());
                }
                match Self::realpath(&path) {
                    Ok(real) if vm.disks.iter().any(|d| d.path == real) => {
                        self.error(&at, ParseError::DiskTwice(path));
                    }
                    Ok(real) => {
                        let format = format.unwrap_or_else(|| crate::sniff_disk_format(&real));
                        vm.disks.push(DiskConf { path: real, format });
                    }
                    Err(why) => self.error(&at, ParseError::Disk(path, why)),
                }
            }
            Tok::Kw(Kw::Local) => {
                self.expect_kw(Kw::Interface)?;
                self.interface(vm, true, &t)?;
            }
            Tok::Kw(Kw::Interface) => self.interface(vm, false, &t)?,
            Tok::Kw(Kw::Boot) => {
                if self.peek_kw(Kw::Device) {
                    self.next();
                    let d = self.next();
                    vm.boot_device = Some(match d.tok {
                        Tok::Kw(Kw::Cdrom) => BootDevice::Cdrom,
                        Tok::Kw(Kw::Disk) => BootDevice::Disk,
                        Tok::Kw(Kw::Net) => BootDevice::Net,
                        _ => return Err(self.unexpected(d)),
                    });
                    return Ok(());
                }
                self.path_once(
                    &mut vm.boot,
                    ParseError::KernelTwice,
                    ParseError::KernelNotFound,
                )?;
            }
            Tok::Kw(Kw::Cdrom) => {
                self.path_once(
                    &mut vm.cdrom,
                    ParseError::CdromTwice,
                    ParseError::CdromNotFound,
                )?;
            }
            Tok::Kw(Kw::Initrd) => {
                self.path_once(
                    &mut vm.initrd,
                    ParseError::InitrdTwice,
                    ParseError::InitrdNotFound,
                )?;
            }
            Tok::Kw(Kw::Cmdline) => {
                let (line, at) = self.string()?;
                if vm.cmdline.is_some() {
                    self.error(&at, ParseError::CmdlineTwice);
                } else if line.len() > CMDLINE_MAX {
                    self.error(&at, ParseError::CmdlineTooLong(line.len()));
                } else {
                    vm.cmdline = Some(line);
                }
            }
            Tok::Kw(Kw::Interfaces) => {
                let (n, at) = self.number()?;
                if st.interfaces_set {
                    self.error(&at, ParseError::InterfacesTwice);
                } else if !(0..=VM_MAX_NICS_PER_VM as i64).contains(&n) {
                    self.error(&at, ParseError::TooManyInterfaces(n));
                } else {
                    st.interfaces_set = true;
                    vm.min_interfaces = n as u32;
                }
            }
            Tok::Kw(Kw::Memory) => {
                let twice = vm.memory.is_some();
                if let Some((mib, at)) = self.size_mib()? {
                    if twice {
                        self.error(&at, ParseError::MemoryTwice);
                    } else {
                        vm.memory = Some(mib << 20);
                    }
                }
            }
            Tok::Kw(Kw::Cpus) => {
                let (n, at) = self.number()?;
                if vm.cpus.is_some() {
                    self.error(&at, ParseError::CpusTwice);
                } else {
                    match u8::try_from(n)
                        .ok()
                        .filter(|&c| (1..=VM_MAX_VCPUS).contains(&c))
                    {
                        Some(c) => vm.cpus = Some(c),
                        None => self.error(&at, ParseError::Cpus(n)),
                    }
                }
            }
            Tok::Kw(Kw::Owner) => {
                if let Some(o) = self.owner_id()? {
                    vm.owner = Some(o);
                }
            }
            Tok::Kw(Kw::Allow) => {
                self.expect_kw(Kw::Instance)?;
                if is_char(self.peek(), b'{') {
                    self.next();
                    loop {
                        let f = self.next();
                        match f.tok {
                            Tok::Char(b'\n') | Tok::Char(b',') => continue,
                            Tok::Char(b'}') => break,
                            _ => {
                                let r = self.instance_flag(vm, f);
                                self.recover_inner(r)?;
                            }
                        }
                    }
                } else {
                    let f = self.next();
                    self.instance_flag(vm, f)?;
                }
            }
            Tok::Kw(Kw::Sev) => self.error(&t, ParseError::NotSupported("sev")),
            Tok::Kw(Kw::Seves) => self.error(&t, ParseError::NotSupported("seves")),
            _ => return Err(self.unexpected(t)),
        }
        Ok(())
    }

    fn instance_flag(&mut self, vm: &mut VmConf, f: Token) -> PResult<()> {
        let perms = &mut vm.allow_instance;
        match f.tok {
            Tok::Kw(Kw::Boot) => perms.boot = true,
            Tok::Kw(Kw::Cdrom) => perms.cdrom = true,
            Tok::Kw(Kw::Cpus) => perms.cpus = true,
            Tok::Kw(Kw::Disk) => perms.disk = true,
            Tok::Kw(Kw::Instance) => perms.instance = true,
            Tok::Kw(Kw::Interface) => perms.interface = true,
            Tok::Kw(Kw::Memory) => perms.memory = true,
            Tok::Kw(Kw::Owner) => {
                perms.owner = true;
                if let Some(o) = self.owner_id()? {
                    vm.instance_owner = Some(o);
                }
            }
            _ => return Err(self.unexpected(f)),
        }
        Ok(())
    }

    /// `[local] interface [NAME] [{ opts } | opts]`.
    fn interface(&mut self, vm: &mut VmConf, local: bool, kw: &Token) -> PResult<()> {
        let mut nic = IfConf {
            local,
            ..IfConf::default()
        };
        if let Tok::Str(name) = self.peek().tok.clone() {
            let at = self.next();
            if name == "tap" {
                // Any free tap, the default.
            } else if name.len() > crate::types::IF_NAME_MAX {
                self.error(&at, ParseError::InterfaceNameTooLong(name));
            } else if !util::valid_ifname(&name) {
                self.error(&at, ParseError::Interface(name));
            } else {
                nic.name = Some(name);
            }
        }
        if is_char(self.peek(), b'{') {
            self.next();
            loop {
                let t = self.next();
                match t.tok {
                    Tok::Char(b'\n') | Tok::Char(b',') => continue,
                    Tok::Char(b'}') => break,
                    _ => {
                        let r = self.iface_option(&mut nic, t);
                        self.recover_inner(r)?;
                    }
                }
            }
        } else {
            while matches!(
                self.peek().tok,
                Tok::Kw(
                    Kw::Switch
                        | Kw::Group
                        | Kw::Locked
                        | Kw::Lladdr
                        | Kw::Rdomain
                        | Kw::Up
                        | Kw::Down
                )
            ) {
                let t = self.next();
                self.iface_option(&mut nic, t)?;
                if is_char(self.peek(), b',') {
                    self.next();
                }
            }
        }
        if vm.interfaces.len() >= VM_MAX_NICS_PER_VM {
            let n = vm.interfaces.len() as i64 + 1;
            self.error(kw, ParseError::TooManyInterfaces(n));
        } else {
            vm.interfaces.push(nic);
        }
        Ok(())
    }

    fn iface_option(&mut self, nic: &mut IfConf, t: Token) -> PResult<()> {
        match t.tok {
            Tok::Kw(Kw::Switch) => {
                let (s, at) = self.string()?;
                if util::name_fits(&s) {
                    nic.switch = Some(s);
                } else {
                    self.error(&at, ParseError::InterfaceSwitchTooLong(s));
                }
            }
            Tok::Kw(Kw::Group) => {
                if let Some(g) = self.group()? {
                    nic.group = Some(g);
                }
            }
            Tok::Kw(Kw::Locked) => {
                self.expect_kw(Kw::Lladdr)?;
                nic.locked = true;
                self.lladdr(nic);
            }
            Tok::Kw(Kw::Lladdr) => self.lladdr(nic),
            Tok::Kw(Kw::Rdomain) => {
                if let Some(r) = self.rdomain()? {
                    nic.rdomain = Some(r);
                }
            }
            Tok::Kw(Kw::Up) => nic.up = true,
            Tok::Kw(Kw::Down) => nic.up = false,
            _ => return Err(self.unexpected(t)),
        }
        Ok(())
    }

    /// The optional address after `lladdr`; all zeros means random.
    fn lladdr(&mut self, nic: &mut IfConf) {
        let Tok::Str(text) = self.peek().tok.clone() else {
            nic.lladdr = None;
            return;
        };
        let at = self.next();
        match util::ether_aton(&text) {
            Some([0, 0, 0, 0, 0, 0]) => nic.lladdr = None,
            // A guest cannot use a multicast address as its own.
            Some(mac) if mac[0] & 1 == 0 => nic.lladdr = Some(mac),
            _ => self.error(&at, ParseError::Lladdr(text)),
        }
    }
}

/// A VM being parsed.
struct VmState {
    vm: VmConf,
    /// `interfaces N` was given (vmd checks this, not the value).
    interfaces_set: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Config {
        let p = parse("t.conf", text.as_bytes().to_vec(), &[]);
        let errs: Vec<String> = p
            .diags
            .iter()
            .filter(|d| matches!(d, Diag::Error(_)))
            .map(|d| d.to_string())
            .collect();
        assert!(errs.is_empty(), "unexpected errors: {errs:?}");
        p.config
    }

    fn errors(text: &str) -> Vec<String> {
        parse("t.conf", text.as_bytes().to_vec(), &[])
            .diags
            .iter()
            .filter(|d| matches!(d, Diag::Error(_)))
            .map(|d| d.to_string())
            .collect()
    }

    #[test]
    fn empty_file_is_the_default_config() {
        assert_eq!(ok(""), Config::default());
        assert_eq!(ok("\n\n# nothing\n"), Config::default());
    }

    #[test]
    fn vm_with_options() {
        let c = ok("vm \"web\" {\n  boot \"/\"\n  memory 1G\n  cpus 2\n  disable\n  owner root\n  cmdline \"console=ttyS0\"\n}\n");
        let vm = &c.vms[0];
        assert_eq!(vm.name, "web");
        assert_eq!(vm.boot.as_deref(), Some(std::path::Path::new("/")));
        assert_eq!(vm.memory, Some(1 << 30));
        assert_eq!(vm.cpus, Some(2));
        assert!(!vm.enabled);
        assert_eq!(vm.owner.as_ref().and_then(|o| o.uid), Some(0));
        assert_eq!(vm.cmdline.as_deref(), Some("console=ttyS0"));
        assert_eq!(vm.line, 1);
    }

    #[test]
    fn instance_syntax_is_parent_first() {
        let c = ok("vm base { boot / }\nvm base instance web1 { memory 1G }\n");
        assert_eq!(c.vms[1].name, "web1");
        assert_eq!(c.vms[1].instance_of.as_deref(), Some("base"));
    }

    #[test]
    fn interfaces_inline_and_block() {
        let c = ok("vm a {\n boot /\n interface tap7 switch up0, locked lladdr fe:e1:ba:d0:00:01\n local interface { group vms\n rdomain 3 down }\n interface\n}\n");
        let nics = &c.vms[0].interfaces;
        assert_eq!(nics.len(), 3);
        assert_eq!(nics[0].name.as_deref(), Some("tap7"));
        assert_eq!(nics[0].switch.as_deref(), Some("up0"));
        assert!(nics[0].locked);
        assert_eq!(nics[0].lladdr, Some([0xfe, 0xe1, 0xba, 0xd0, 0, 1]));
        assert!(nics[1].local && !nics[1].up);
        assert_eq!(nics[1].rdomain, Some(3));
        assert_eq!(nics[1].group.as_deref(), Some("vms"));
        assert!(nics[2].up && nics[2].name.is_none());
    }

    #[test]
    fn allow_instance_forms() {
        let c = ok("vm a {\n boot /\n allow instance { boot, memory\n disk cpus }\n}\nvm b {\n boot /\n allow instance owner :root\n}\n");
        let p = c.vms[0].allow_instance;
        assert!(p.boot && p.memory && p.disk && p.cpus && !p.cdrom && !p.owner);
        assert!(c.vms[1].allow_instance.owner);
        assert_eq!(c.vms[1].instance_owner.as_ref().unwrap().gid, Some(0));
    }

    #[test]
    fn globals() {
        let c = ok("local prefix 10.0.0.0/12\nlocal inet6 prefix fd00:1::/48\nsocket owner :root\nstaggered start parallel 3 delay 5\nuser limit cpus 8 memory 4G interfaces 2\n");
        let g = &c.global;
        assert_eq!(g.local_prefix.to_string(), "10.0.0.0/12");
        assert_eq!(g.local_prefix6.unwrap().to_string(), "fd00:1::/48");
        assert_eq!(g.socket_owner.as_ref().unwrap().gid, Some(0));
        assert_eq!((g.staggered.parallel, g.staggered.delay), (Some(3), 5));
        assert_eq!(
            (
                g.user_limits.max_cpus,
                g.user_limits.max_mem_mib,
                g.user_limits.max_ifs
            ),
            (8, 4096, 2)
        );
    }

    #[test]
    fn errors_are_collected_per_line() {
        let e = errors("vm a {\n memory 1K\n boot /\n boot /\n cpus 0\n bogus\n}\nfoo bar\n");
        assert_eq!(
            e,
            vec![
                "t.conf:2: failed to parse size: 1K: size must be at least one megabyte",
                "t.conf:4: kernel specified more than once",
                "t.conf:5: invalid number of cpus: 0",
                "t.conf:6: syntax error",
                "t.conf:8: syntax error",
            ]
        );
    }

    #[test]
    fn a_block_with_a_bad_header_is_skipped_whole() {
        assert_eq!(
            errors("vm {\n boot /\n memory 1G\n}\nvm \"ok\" { boot / }\nswitch \"s\" 5 { interface br0 }\n"),
            vec!["t.conf:1: syntax error", "t.conf:6: syntax error"]
        );
    }

    #[test]
    fn an_option_with_a_bad_inner_block_is_skipped_whole() {
        assert_eq!(
            errors(
                "vm \"a\" {\n boot /\n interface tap0 junk { switch x\n up }\n memory 1G junk\n}\n"
            ),
            vec!["t.conf:3: syntax error", "t.conf:5: syntax error"]
        );
    }

    #[test]
    fn eof_inside_block_is_a_syntax_error() {
        assert_eq!(errors("vm a {\n boot /\n"), vec!["t.conf:3: syntax error"]);
    }

    #[test]
    fn a_vm_with_errors_is_not_kept() {
        let p = parse("t", b"vm a { cpus 900 }\nvm b { boot / }\n".to_vec(), &[]);
        assert_eq!(p.config.vms.len(), 1);
        assert_eq!(p.config.vms[0].name, "b");
    }

    #[test]
    fn adjacent_words_concatenate() {
        let c = ok("d = \"/\"\nvm a { boot $d \"etc\" }\n");
        assert_eq!(c.vms[0].boot.as_deref(), Some(std::path::Path::new("/etc")));
    }
}
