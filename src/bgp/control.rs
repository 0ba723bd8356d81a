//! BIRD's control socket, spoken directly (what `birdc` does): one command per line; every reply
//! line starts with a four-digit code followed by '-' (more to come) or ' ' (last line), and
//! continuation lines of the same code start with a space. Codes 8xxx and 9xxx are errors.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// One reply line: its code and its text (without the code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub code: u16,
    pub text: String,
}

#[derive(Debug)]
pub struct Reply {
    pub lines: Vec<Line>,
}

impl Reply {
    /// The code of the last line: the command's outcome.
    pub fn code(&self) -> u16 {
        self.lines.last().map(|l| l.code).unwrap_or(0)
    }

    pub fn is_error(&self) -> bool {
        self.code() >= 8000
    }

    pub fn text(&self) -> String {
        self.lines
            .iter()
            .map(|l| l.text.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

pub struct Control {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    /// From the greeting, e.g. "BIRD 2.0.12".
    pub version: String,
}

impl Control {
    pub fn connect(path: &Path) -> io::Result<Control> {
        let stream = UnixStream::connect(path)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.set_write_timeout(Some(Duration::from_secs(10)))?;
        let writer = stream.try_clone()?;
        let mut c = Control {
            reader: BufReader::new(stream),
            writer,
            version: String::new(),
        };
        let greeting = c.read_reply()?;
        c.version = greeting
            .text()
            .trim_end_matches(" ready.")
            .trim()
            .to_string();
        Ok(c)
    }

    pub fn command(&mut self, cmd: &str) -> io::Result<Reply> {
        if cmd.contains('\n') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a BIRD command is one line",
            ));
        }
        self.writer.write_all(format!("{cmd}\n").as_bytes())?;
        self.read_reply()
    }

    fn read_reply(&mut self) -> io::Result<Reply> {
        read_reply(&mut self.reader)
    }
}

/// One reply: lines up to and including the first coded line without '-'.
fn read_reply(reader: &mut impl BufRead) -> io::Result<Reply> {
    let mut lines: Vec<Line> = Vec::new();
    loop {
        let mut raw = String::new();
        if reader.read_line(&mut raw)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "BIRD closed its control socket",
            ));
        }
        let raw = raw.trim_end_matches('\n');
        match parse_line(raw) {
            Parsed::Coded { code, last, text } => {
                lines.push(Line { code, text });
                if last {
                    return Ok(Reply { lines });
                }
            }
            Parsed::Continuation(text) => {
                let code = lines.last().map(|l| l.code).unwrap_or(0);
                lines.push(Line { code, text });
            }
        }
    }
}

/// A reply as BIRD wrote it on the socket (captured output in tests).
#[cfg(test)]
pub(crate) fn parse_reply(raw: &str) -> Reply {
    read_reply(&mut raw.as_bytes()).expect("a complete reply")
}

enum Parsed {
    Coded { code: u16, last: bool, text: String },
    Continuation(String),
}

fn parse_line(raw: &str) -> Parsed {
    let b = raw.as_bytes();
    if b.len() >= 5 && b[..4].iter().all(u8::is_ascii_digit) && (b[4] == b'-' || b[4] == b' ') {
        Parsed::Coded {
            code: raw[..4].parse().unwrap_or(0),
            last: b[4] == b' ',
            text: raw[5..].to_string(),
        }
    } else {
        Parsed::Continuation(raw.strip_prefix(' ').unwrap_or(raw).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_lines() {
        assert!(matches!(
            parse_line("0003 Reconfigured"),
            Parsed::Coded {
                code: 3,
                last: true,
                ..
            }
        ));
        assert!(matches!(
            parse_line("1002-device1    Device"),
            Parsed::Coded {
                code: 1002,
                last: false,
                ..
            }
        ));
        match parse_line(" \tvia 10.200.0.12 on eth0") {
            Parsed::Continuation(t) => assert_eq!(t, "\tvia 10.200.0.12 on eth0"),
            _ => panic!("continuation expected"),
        }
    }
}
