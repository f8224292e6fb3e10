//! Logging for every vmd process (OpenBSD's `log.c`): to stderr in the
//! foreground (`-d`), to syslog through `/dev/log` once daemonised; the
//! level follows `-v` and `vmctl log brief|verbose`.

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::sync::OnceLock;

use tracing::level_filters::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::reload;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Registry;

type Handle = reload::Handle<LevelFilter, Registry>;

static LEVEL: OnceLock<Handle> = OnceLock::new();

/// The level for a `-v` count: info, then debug, then trace.
pub fn level_for(verbose: u8) -> LevelFilter {
    match verbose {
        0 => LevelFilter::INFO,
        1 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    }
}

/// Starts logging for process `name` ("parent", "control", ...). Called
/// once per process; later calls are ignored.
pub fn init(name: &'static str, foreground: bool, verbose: u8) {
    let (filter, handle) = reload::Layer::new(level_for(verbose));
    let registry = tracing_subscriber::registry().with(filter);
    let result = if foreground {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_target(false)
                    .without_time()
                    .with_ansi(false)
                    .fmt_fields(tracing_subscriber::fmt::format::DefaultFields::new())
                    .event_format(Prefixed(name)),
            )
            .try_init()
    } else {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(Syslog::new(name))
                    .with_target(false)
                    .without_time()
                    .with_ansi(false)
                    .with_level(false),
            )
            .try_init()
    };
    if result.is_ok() {
        let _ = LEVEL.set(handle);
    }
}

/// Changes the level of this process's log (`vmctl log`).
pub fn set_verbose(verbose: u8) {
    if let Some(h) = LEVEL.get() {
        let _ = h.modify(|f| *f = level_for(verbose));
    }
}

/// The current `-v` count equivalent.
pub fn verbose() -> u8 {
    match LEVEL.get().and_then(|h| h.clone_current()) {
        Some(LevelFilter::TRACE) => 2,
        Some(LevelFilter::DEBUG) => 1,
        _ => 0,
    }
}

/// Formats a foreground log line as `vmd[name]: message`.
struct Prefixed(&'static str);

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for Prefixed
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let level = *event.metadata().level();
        let tag = match level {
            tracing::Level::ERROR => "fatal: ",
            tracing::Level::WARN => "warning: ",
            _ => "",
        };
        write!(writer, "vmd[{}]: {tag}", self.0)?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// A writer that sends each log line as one syslog datagram to
/// `/dev/log` (facility daemon).
struct Syslog {
    name: &'static str,
    sock: Option<UnixDatagram>,
}

impl Syslog {
    fn new(name: &'static str) -> Self {
        let sock = UnixDatagram::unbound()
            .and_then(|s| s.connect("/dev/log").map(|()| s))
            .ok();
        Syslog { name, sock }
    }
}

impl<'a> MakeWriter<'a> for Syslog {
    type Writer = SyslogLine<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        SyslogLine {
            owner: self,
            buf: Vec::new(),
            priority: 3 << 3 | 6, // daemon.info
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        let severity = match *meta.level() {
            tracing::Level::ERROR => 2, // crit, as vmd's fatal
            tracing::Level::WARN => 4,
            tracing::Level::INFO => 6,
            _ => 7,
        };
        SyslogLine {
            owner: self,
            buf: Vec::new(),
            priority: 3 << 3 | severity,
        }
    }
}

/// One log line on its way to syslog; sent when dropped.
struct SyslogLine<'a> {
    owner: &'a Syslog,
    buf: Vec<u8>,
    priority: u8,
}

impl Write for SyslogLine<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for SyslogLine<'_> {
    fn drop(&mut self) {
        let Some(sock) = &self.owner.sock else {
            return;
        };
        let text = String::from_utf8_lossy(&self.buf);
        let line = format!(
            "<{}>vmd[{}]: {}: {}",
            self.priority,
            std::process::id(),
            self.owner.name,
            text.trim_end()
        );
        let _ = sock.send(line.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbosity_maps_to_levels() {
        assert_eq!(level_for(0), LevelFilter::INFO);
        assert_eq!(level_for(1), LevelFilter::DEBUG);
        assert_eq!(level_for(5), LevelFilter::TRACE);
    }
}
