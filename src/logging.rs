//! Log lines for the agent (stderr) and the CNI plugin (its `logFile`, and stderr on failure),
//! through `tracing`. Every line has the same parts, in this order: an RFC 3339 timestamp (UTC,
//! milliseconds), the level, the component (`agent`, `cni`, ...), the message, then the event's
//! fields and the component's context fields (the agent's `node`; the plugin's `command`,
//! `container`, `ifname`, `pid`):
//!
//! ```text
//! 2026-12-01T07:03:12.345Z  INFO ferrynet agent: metrics on http://127.0.0.1:9105/metrics node=h1
//! {"timestamp":"2026-12-01T07:03:12.345Z","level":"INFO","component":"agent","message":"metrics on http://127.0.0.1:9105/metrics","node":"h1"}
//! ```
//!
//! Text values with spaces, quotes or `=` are quoted (Rust string syntax). Nothing here ever
//! writes to stdout: that is the CNI plugin's result.

use std::fmt;
use std::io;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;

/// How lines look: `text` for people, `json` (one object a line) for log collectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("invalid log format {s:?} (expected text or json)")),
        }
    }
}

/// Who logs, and the fields that go on each of its lines.
#[derive(Debug, Clone)]
pub struct Logger {
    component: &'static str,
    context: Vec<(&'static str, Value)>,
}

impl Logger {
    pub fn new(component: &'static str) -> Self {
        Logger {
            component,
            context: Vec::new(),
        }
    }

    /// A field every line carries (after the event's own fields).
    pub fn field(mut self, key: &'static str, value: impl Into<Value>) -> Self {
        self.context.push((key, value.into()));
        self
    }

    /// Lines to stderr (daemons).
    pub fn init_stderr(self, format: LogFormat) {
        let _ = self.init(Some(format), None);
    }

    /// Lines appended to `path` (opened once, each line one write), and also to stderr in the
    /// text format when `stderr`. If the file cannot be opened, stderr still gets its lines.
    pub fn init_file(self, path: &Path, format: LogFormat, stderr: bool) -> io::Result<()> {
        self.init(stderr.then_some(LogFormat::Text), Some((path, format)))
    }

    /// Installs the process's subscriber (once; later calls change nothing): ferrynet's own
    /// events from INFO up, the libraries' from WARN up.
    fn init(self, stderr: Option<LogFormat>, file: Option<(&Path, LogFormat)>) -> io::Result<()> {
        let mut opened = Ok(None);
        if let Some((path, format)) = file {
            opened = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map(|f| Some((f, format)));
        }
        let (file, result) = match opened {
            Ok(f) => (f, Ok(())),
            Err(e) => (None, Err(e)),
        };
        let filter = Targets::new()
            .with_target("ferrynet", LevelFilter::INFO)
            .with_default(LevelFilter::WARN);
        let to_stderr = stderr.map(|format| {
            tracing_subscriber::fmt::layer()
                .event_format(self.line(format))
                .with_writer(io::stderr)
        });
        let to_file = file.map(|(f, format)| {
            tracing_subscriber::fmt::layer()
                .event_format(self.line(format))
                .with_writer(f)
        });
        let subscriber = tracing_subscriber::registry()
            .with(filter)
            .with(to_stderr)
            .with(to_file);
        let _ = tracing::subscriber::set_global_default(subscriber);
        result
    }

    fn line(&self, format: LogFormat) -> Line {
        Line {
            format,
            component: self.component,
            context: self.context.clone(),
        }
    }
}

/// `Logger::new(component).init_stderr(format)`.
pub fn init_stderr(format: LogFormat, component: &'static str) {
    Logger::new(component).init_stderr(format)
}

/// RFC 3339 in UTC with milliseconds, e.g. `2026-12-01T07:03:12.345Z` (tracing-subscriber's
/// own `SystemTime` timer prints microseconds; its other UTC timers need `time` or `chrono`).
#[derive(Debug, Clone, Copy, Default)]
pub struct UtcMillis;

impl FormatTime for UtcMillis {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        write_rfc3339(w, SystemTime::now())
    }
}

/// Times before 1970 are written as the epoch.
pub fn write_rfc3339(w: &mut impl fmt::Write, t: SystemTime) -> fmt::Result {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    write!(
        w,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        s / 3600,
        s / 60 % 60,
        s % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (H. Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// One event as one line, in either format.
struct Line {
    format: LogFormat,
    component: &'static str,
    context: Vec<(&'static str, Value)>,
}

impl<S, N> FormatEvent<S, N> for Line
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let context = self.context.iter().map(|(k, v)| (*k, v.clone()));
        let level = *event.metadata().level();
        match self.format {
            LogFormat::Text => {
                UtcMillis.format_time(&mut w)?;
                write!(w, " {:>5} ferrynet {}: ", level, self.component)?;
                // One event, one line.
                if fields.message.contains(['\n', '\r']) {
                    let m = fields.message.replace('\r', "\\r").replace('\n', "\\n");
                    w.write_str(&m)?;
                } else {
                    w.write_str(&fields.message)?;
                }
                for (k, v) in fields.values.into_iter().chain(context) {
                    write!(w, " {k}=")?;
                    match v {
                        Value::String(s) if needs_quotes(&s) => write!(w, "{s:?}")?,
                        Value::String(s) => w.write_str(&s)?,
                        other => write!(w, "{other}")?,
                    }
                }
            }
            LogFormat::Json => {
                let mut ts = String::with_capacity(24);
                write_rfc3339(&mut ts, SystemTime::now())?;
                write!(
                    w,
                    "{{\"timestamp\":\"{ts}\",\"level\":\"{}\",\"component\":{},\"message\":{}",
                    level.as_str(),
                    json(&Value::from(self.component)),
                    json(&Value::String(fields.message))
                )?;
                for (k, v) in fields.values.into_iter().chain(context) {
                    write!(w, ",{}:{}", json(&Value::from(k)), json(&v))?;
                }
                w.write_char('}')?;
            }
        }
        writeln!(w)
    }
}

fn json(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

fn needs_quotes(s: &str) -> bool {
    s.is_empty()
        || s.chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '=')
}

/// An event's message and its other fields, in the order given.
#[derive(Default)]
struct Fields {
    message: String,
    values: Vec<(&'static str, Value)>,
}

impl Fields {
    fn push(&mut self, field: &Field, value: Value) {
        if field.name() == "message" {
            self.message = match value {
                Value::String(s) => s,
                other => other.to_string(),
            };
        } else {
            self.values.push((field.name(), value));
        }
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.push(field, Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(field, Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.push(field, Value::String(value.to_string()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.push(field, Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        // NaN and infinities are not JSON numbers.
        let v = serde_json::Number::from_f64(value)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(value.to_string()));
        self.push(field, v);
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push(field, Value::from(value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn rfc3339(secs: u64, millis: u64) -> String {
        let mut s = String::new();
        let t = UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis);
        write_rfc3339(&mut s, t).unwrap();
        s
    }

    #[test]
    fn logging_timestamps_are_rfc3339_utc_millis() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_796_102_606, 740), "2026-12-01T05:23:26.740Z");
        // Leap days, the end of a year, centuries with and without a leap day.
        assert_eq!(rfc3339(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(rfc3339(1_709_251_199, 999), "2024-02-29T23:59:59.999Z");
        assert_eq!(rfc3339(1_735_689_599, 0), "2024-12-31T23:59:59.000Z");
        assert_eq!(rfc3339(4_107_542_400, 0), "2100-03-01T00:00:00.000Z");
        // Sub-millisecond digits are cut, not rounded.
        let t = UNIX_EPOCH + Duration::from_nanos(1_999_999_999);
        let mut s = String::new();
        write_rfc3339(&mut s, t).unwrap();
        assert_eq!(s, "1970-01-01T00:00:01.999Z");
        // Before the epoch: the epoch.
        let mut s = String::new();
        write_rfc3339(&mut s, UNIX_EPOCH - Duration::from_secs(1)).unwrap();
        assert_eq!(s, "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn logging_formats_parse() {
        assert_eq!("text".parse::<LogFormat>(), Ok(LogFormat::Text));
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert!("JSON ".parse::<LogFormat>().is_err());
    }

    #[test]
    fn logging_lines_have_the_same_parts_in_both_formats() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let logger = Logger::new("cni")
            .field("container", "abc")
            .field("ifname", "eth0")
            .field("pid", 42u32);
        let mut out = Vec::new();
        for format in [LogFormat::Text, LogFormat::Json] {
            let buf = Buf::default();
            let w = buf.clone();
            let sub = tracing_subscriber::registry().with(
                tracing_subscriber::fmt::layer()
                    .event_format(logger.line(format))
                    .with_writer(move || w.clone()),
            );
            tracing::subscriber::with_default(sub, || {
                tracing::warn!(
                    peer = "10.0.0.2",
                    n = 3u64,
                    why = "not here",
                    "refused {}\nx",
                    1
                )
            });
            out.push(String::from_utf8(buf.0.lock().unwrap().clone()).unwrap());
        }
        let (text, json) = (&out[0], &out[1]);
        // 2026-12-01T07:03:12.345Z
        assert_eq!(text.find(' '), Some(24), "{text}");
        assert!(
            text.ends_with('\n') && text.matches('\n').count() == 1,
            "{text}"
        );
        assert_eq!(
            &text[24..],
            "  WARN ferrynet cni: refused 1\\nx peer=10.0.0.2 n=3 why=\"not here\" container=abc ifname=eth0 pid=42\n"
        );
        let v: Value = serde_json::from_str(json).unwrap();
        let ts = v["timestamp"].as_str().unwrap();
        let shape = |s: &str| -> String {
            s.chars()
                .map(|c| if c.is_ascii_digit() { '0' } else { c })
                .collect()
        };
        assert_eq!(shape(ts), "0000-00-00T00:00:00.000Z");
        assert_eq!(shape(&text[..24]), "0000-00-00T00:00:00.000Z");
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["component"], "cni");
        assert_eq!(v["message"], "refused 1\nx");
        assert_eq!(v["peer"], "10.0.0.2");
        assert_eq!(v["n"], 3);
        assert_eq!(v["container"], "abc");
        assert_eq!(v["pid"], 42);
        assert!(json.starts_with("{\"timestamp\":"), "{json}");
    }
}
