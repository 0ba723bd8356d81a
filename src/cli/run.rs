//! `ferrynet run`: a command in a fresh network namespace attached to a network.

use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicI32, Ordering};

use anyhow::{Context, Result};

use crate::bridge::Driver;
use crate::netns::{self, Netns};
use crate::network::StateDir;

#[derive(clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    endpoint: super::EndpointArgs,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward_signal(sig: libc::c_int) {
    let pid = CHILD.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// Signals that would kill us go to the child instead, so that we live to detach.
fn forward_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
        // SAFETY: installs a handler that only calls kill.
        unsafe {
            libc::signal(sig, forward_signal as *const () as libc::sighandler_t);
        }
    }
}

pub fn run(state: &StateDir, a: RunArgs) -> Result<ExitCode> {
    let name = format!("ferrynet-run-{}", std::process::id());
    let path = netns::create_named(&name)?;
    let result = run_in(state, &a, &name, &path);
    let _ = netns::delete_named(&name);
    result
}

fn run_in(state: &StateDir, a: &RunArgs, name: &str, path: &std::path::Path) -> Result<ExitCode> {
    let ep = super::attach_endpoint(state, path, name.to_string(), &a.endpoint)?;
    let ns = Netns::open(path)?;
    let fd = ns.fd().as_raw_fd();
    let mut cmd = Command::new(&a.command[0]);
    cmd.args(&a.command[1..]);
    // SAFETY: only async-signal-safe syscalls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
                libc::signal(sig, libc::SIG_DFL);
            }
            Ok(())
        });
    }
    forward_signals();
    let status = cmd.spawn().and_then(|mut child| {
        CHILD.store(child.id() as i32, Ordering::SeqCst);
        child.wait()
    });
    let net = state.load(&a.endpoint.network)?;
    Driver::new(state.clone())
        .detach(&net, &ep.container_id, &ep.ifname)
        .context("detach after the command exited")?;
    let status = status.with_context(|| format!("run {:?}", a.command[0]))?;
    let code = match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(sig)) => 128 + sig,
        _ => 1,
    };
    Ok(ExitCode::from(code as u8))
}
