//! `ferrynet bgp status`: what this host's BIRD announces, learns, and to whom it talks.

use std::path::PathBuf;

use anyhow::{Context, Result};

#[derive(clap::Subcommand)]
pub enum BgpCmd {
    /// Sessions (routes in/out per address family), announced and learned prefixes of IPv4
    /// and, on a dual-stack host, IPv6 (a table, or --json).
    Status {
        #[arg(long)]
        json: bool,
        /// BIRD's control socket [default: RUN_DIR/bird.ctl, where the agent starts it].
        #[arg(long)]
        socket: Option<PathBuf>,
    },
}

pub fn run(cmd: BgpCmd, state: &crate::network::StateDir) -> Result<()> {
    match cmd {
        BgpCmd::Status { json, socket } => {
            let socket = socket.unwrap_or_else(|| state.run_dir().join("bird.ctl"));
            let status = crate::bgp::status::query(&socket).with_context(|| {
                format!(
                    "no BIRD answers on {} (is the agent running with --backend bgp?)",
                    socket.display()
                )
            })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", crate::bgp::status::render_table(&status));
            }
            Ok(())
        }
    }
}
