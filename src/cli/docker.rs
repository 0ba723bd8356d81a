//! `ferrynet docker-plugin`: Docker's network driver in the foreground (SIGTERM stops it).

use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::docker::client::{DockerHost, DEFAULT_HOST};
use crate::docker::{default_socket, serve, Plugin};
use crate::logging::{LogFormat, Logger};
use crate::network::{validate_id, StateDir};

#[derive(clap::Args)]
pub struct DockerPluginArgs {
    /// The unix socket Docker finds the plugin at; the driver's name (`docker network create
    /// -d NAME`) is the file's stem. Docker looks in /run/docker/plugins only.
    /// [default: /run/docker/plugins/NAME.sock]
    #[arg(long)]
    socket: Option<PathBuf>,
    /// The driver's name, when --socket is not given.
    #[arg(long, default_value = "ferrynet")]
    name: String,
    /// The Docker daemon's API socket, asked for the names of Docker's networks.
    #[arg(long, env = "DOCKER_HOST", default_value = DEFAULT_HOST)]
    docker_host: String,
    /// The agent's subnet.env, for `--ipam-opt subnet=auto` (as `ferrynet agent
    /// --subnet-file`). [default: RUN_DIR/subnet.env, i.e. /run/ferrynet/subnet.env]
    #[arg(long)]
    subnet_file: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

pub fn run(a: DockerPluginArgs, state: &StateDir) -> Result<()> {
    validate_id("--name", &a.name)?;
    let docker = DockerHost::parse(&a.docker_host)?;
    let socket = match a.socket {
        Some(s) => {
            let stem = s.file_stem().and_then(|n| n.to_str()).unwrap_or_default();
            if s.extension().and_then(|e| e.to_str()) != Some("sock") || stem.is_empty() {
                bail!(
                    "invalid --socket {:?}: Docker finds plugins as NAME.sock",
                    s.display()
                );
            }
            s
        }
        None => default_socket(&a.name),
    };
    let name = socket
        .file_stem()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    Logger::new("docker")
        .field("driver", name.as_str())
        .init_stderr(a.log_format);
    serve(
        &socket,
        Plugin::new(
            state.clone(),
            docker,
            a.subnet_file
                .unwrap_or_else(|| state.run_dir().join("subnet.env")),
        ),
    )?;
    Ok(())
}
