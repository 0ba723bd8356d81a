//! The BGP backend (Calico's way): a BIRD 2 daemon announces this host's subnet and learns every
//! other host's; BIRD installs what it learns in the kernel (rtm_protocol `bird`, 12). ferrynet
//! writes BIRD's configuration from the lease store and applies every change through BIRD's
//! control socket (`configure`), never by restarting it, so established sessions survive. BIRD
//! runs as its own daemon: it outlives an agent restart, and the next agent adopts it.

pub mod control;
mod render;
pub mod status;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ipnet::{Ipv4Net, Ipv6Net};

use control::Control;
use render::render_main;
pub use render::{render_fragment, MeshPeer, Site};

/// rtm_protocol of the routes BIRD installs.
pub const PROTO_BIRD: u8 = 12;
/// The first private 16-bit AS number (Calico's default too).
pub const DEFAULT_AS: u32 = 64512;

#[derive(Debug, thiserror::Error)]
pub enum BgpError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("BIRD refused {what}: {reply}")]
    Refused { what: String, reply: String },
    #[error("no BIRD answers on {0} (--bird-socket names a BIRD ferrynet does not start)")]
    NotRunning(PathBuf),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BgpError {
    let what = what.into();
    move |source| BgpError::Io { what, source }
}

/// `--bgp-peer IP[,AS]`: a top-of-rack router or route reflector. Without an AS, the peer is in
/// this host's AS (iBGP, e.g. a route reflector).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BgpPeer {
    pub ip: Ipv4Addr,
    pub asn: Option<u32>,
}

impl std::str::FromStr for BgpPeer {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (ip, asn) = match s.split_once(',') {
            Some((ip, asn)) => (ip, Some(asn)),
            None => (s, None),
        };
        let ip = ip
            .trim()
            .parse()
            .map_err(|_| format!("--bgp-peer {s:?}: {ip:?} is not an IPv4 address"))?;
        let asn = asn
            .map(|a| parse_asn(a.trim()))
            .transpose()
            .map_err(|e| format!("--bgp-peer {s:?}: {e}"))?;
        Ok(BgpPeer { ip, asn })
    }
}

/// An AS number, plain (64512) or asdot (1.10).
pub fn parse_asn(s: &str) -> Result<u32, String> {
    let n = match s.split_once('.') {
        Some((hi, lo)) => hi
            .parse::<u16>()
            .ok()
            .zip(lo.parse::<u16>().ok())
            .map(|(hi, lo)| (u32::from(hi) << 16) | u32::from(lo)),
        None => s.parse::<u32>().ok(),
    };
    match n {
        Some(n) if n != 0 => Ok(n),
        _ => Err(format!("{s:?} is not an AS number (1 to 4294967295)")),
    }
}

#[derive(Debug, Clone)]
pub struct BgpConfig {
    /// This host's AS.
    pub local_as: u32,
    /// Routers and route reflectors to peer with.
    pub peers: Vec<BgpPeer>,
    /// A session to every other host (the default when there are no `peers`).
    pub mesh: bool,
    /// Seconds without a keepalive before a session (and its routes) is dropped.
    pub hold_time: u16,
    /// Where the generated configuration and BIRD's log live.
    pub config_dir: PathBuf,
    /// BIRD's control socket.
    pub socket: PathBuf,
    /// An already-running BIRD that includes `ferrynet.conf` from `config_dir`: ferrynet only
    /// rewrites that file and reconfigures; it never starts or stops the daemon.
    pub external: bool,
}

/// The BIRD daemon this host's agent drives.
pub struct Speaker {
    cfg: BgpConfig,
    site: Site,
    /// What was last written and loaded (None: nothing yet by this process).
    loaded: Option<String>,
}

impl Speaker {
    pub fn new(cfg: BgpConfig, site: Site) -> Speaker {
        Speaker {
            cfg,
            site,
            loaded: None,
        }
    }

    pub fn config(&self) -> &BgpConfig {
        &self.cfg
    }

    pub fn set_subnet(&mut self, subnet: Ipv4Net, subnet6: Option<Ipv6Net>) {
        self.site.subnet = subnet;
        self.site.subnet6 = subnet6;
    }

    /// The file BIRD reads: bird.conf for ferrynet's own BIRD, the includable fragment
    /// ferrynet.conf for an external one.
    pub fn config_path(&self) -> PathBuf {
        self.cfg.config_dir.join(if self.cfg.external {
            "ferrynet.conf"
        } else {
            "bird.conf"
        })
    }

    fn pid_path(&self) -> PathBuf {
        self.cfg.config_dir.join("bird.pid")
    }

    /// Writes the configuration for `mesh` and makes BIRD run it: reconfigures a running
    /// BIRD when the text changed (or this agent has not loaded it yet), starts one when none
    /// answers. Returns whether anything changed.
    pub fn reconcile(&mut self, mesh: &[MeshPeer]) -> Result<bool, BgpError> {
        let fragment = render_fragment(&self.cfg, &self.site, mesh);
        let text = if self.cfg.external {
            fragment
        } else {
            render_main(&self.cfg, &self.site, &fragment)
        };
        let path = self.config_path();
        let changed = self.loaded.as_deref() != Some(text.as_str());
        if changed {
            crate::util::ensure_dir(&self.cfg.config_dir)
                .map_err(io(format!("{}", self.cfg.config_dir.display())))?;
            crate::util::write_atomic(&path, text.as_bytes())
                .map_err(io(format!("{}", path.display())))?;
        }
        match Control::connect(&self.cfg.socket) {
            Ok(mut c) => {
                if changed {
                    configure(&mut c)?;
                }
            }
            Err(_) if self.cfg.external => {
                self.loaded = None;
                return Err(BgpError::NotRunning(self.cfg.socket.clone()));
            }
            Err(_) => self.start(&path)?,
        }
        self.loaded = Some(text);
        Ok(changed)
    }

    /// Whether BIRD still runs (checked every loop: a dead BIRD is restarted by the next
    /// reconcile, which the caller should force).
    pub fn alive(&self) -> bool {
        if self.cfg.external {
            return Control::connect(&self.cfg.socket).is_ok();
        }
        crate::util::read_pid_file(&self.pid_path()).is_some_and(crate::util::process_running)
    }

    fn start(&mut self, path: &Path) -> Result<(), BgpError> {
        if let Some(dir) = self.cfg.socket.parent() {
            crate::util::ensure_dir(dir).map_err(io(format!("{}", dir.display())))?;
        }
        // BIRD daemonizes (its own session): it outlives this agent, as the routes it keeps
        // in the kernel must.
        let out = Command::new(bird_binary())
            .arg("-c")
            .arg(path)
            .arg("-s")
            .arg(&self.cfg.socket)
            .arg("-P")
            .arg(self.pid_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(io(format!("start {}", bird_binary().display())))?;
        if !out.status.success() {
            return Err(BgpError::Refused {
                what: format!("to start with {}", path.display()),
                reply: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match Control::connect(&self.cfg.socket) {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() >= deadline => {
                    return Err(io(format!("BIRD's socket {}", self.cfg.socket.display()))(
                        e,
                    ))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// Stops ferrynet's BIRD: its sessions close with a notification, so every peer drops this
    /// host's routes at once instead of after the hold time. An external BIRD is left running.
    pub fn shutdown(&self) -> Result<(), BgpError> {
        if self.cfg.external {
            return Ok(());
        }
        let mut c = Control::connect(&self.cfg.socket).map_err(io("BIRD's control socket"))?;
        // "down" answers, then BIRD closes the socket and exits.
        let _ = c.command("down");
        Ok(())
    }
}

/// Re-reads the file BIRD was started with (which, for an external BIRD, includes ours).
fn configure(c: &mut Control) -> Result<(), BgpError> {
    let reply = c.command("configure").map_err(io("BIRD configure"))?;
    if reply.is_error() {
        return Err(BgpError::Refused {
            what: "the new configuration".into(),
            reply: reply.text(),
        });
    }
    Ok(())
}

fn bird_binary() -> PathBuf {
    let sbin = PathBuf::from("/usr/sbin/bird");
    if sbin.exists() {
        sbin
    } else {
        PathBuf::from("bird")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse() {
        assert_eq!(
            "10.0.0.1,65000".parse::<BgpPeer>(),
            Ok(BgpPeer {
                ip: Ipv4Addr::new(10, 0, 0, 1),
                asn: Some(65000)
            })
        );
        assert_eq!(
            "10.0.0.1".parse::<BgpPeer>().unwrap().asn,
            None,
            "iBGP by default"
        );
        assert_eq!(parse_asn("1.10"), Ok(65546));
        assert!("10.0.0.1,0".parse::<BgpPeer>().is_err());
        assert!("router,65000".parse::<BgpPeer>().is_err());
    }
}
