//! Docker's libnetwork remote network driver, served over a unix socket: `docker network
//! create -d ferrynet` makes a ferrynet network, and Docker's containers on it are ordinary
//! ferrynet endpoints (the same bridge driver, IPAM records, firewall elements and
//! anti-spoofing guard); `--ipam-driver ferrynet` on the same socket makes ferrynet's IPAM
//! Docker's. The plugin is a translation layer: [`api`] holds the network protocol's types,
//! [`plugin`] the calls' dispatch, [`networks`], [`endpoints`] and [`ports`] its handlers
//! calling the bridge driver, [`ipam`] the IPAM protocol, [`client`]
//! the few questions asked of the daemon's API (network names, endpoints for the start-up
//! GC), this module the HTTP server.
//!
//! The server is hyper 1 (HTTP/1.1) on a tokio current-thread runtime, started only by
//! `ferrynet docker-plugin`: the CNI plugin's start-up path never touches it. Handlers do
//! blocking work (netlink, nf_tables, file locks), so each runs on tokio's blocking pool.

pub mod api;
pub mod client;
pub mod endpoints;
pub mod ipam;
pub mod networks;
pub mod plugin;
pub mod ports;

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::UnixListener;
use tokio::signal::unix::{signal, SignalKind};

pub use plugin::Plugin;

/// Where Docker looks for a plugin named NAME (it ignores its own --exec-root for this).
pub const PLUGIN_DIR: &str = "/run/docker/plugins";

pub fn default_socket(name: &str) -> PathBuf {
    Path::new(PLUGIN_DIR).join(format!("{name}.sock"))
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("socket {path}: {source}")]
    Socket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("socket {0} is in use by a running plugin")]
    InUse(PathBuf),
    #[error("runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// Serves `plugin` on the unix socket `socket` until SIGTERM or SIGINT; the socket file is
/// removed on the way out. A stale socket (no one listening) is replaced; a live one is an
/// error.
pub fn serve(socket: &Path, plugin: Plugin) -> Result<(), ServeError> {
    let sock_err = |source| ServeError::Socket {
        path: socket.to_path_buf(),
        source,
    };
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).map_err(sock_err)?;
    }
    if std::os::unix::net::UnixStream::connect(socket).is_ok() {
        return Err(ServeError::InUse(socket.to_path_buf()));
    }
    match std::fs::remove_file(socket) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(sock_err(e)),
        _ => {}
    }
    // No other plugin serves this state now: clean up after a crashed one before Docker's
    // next call (its calls wait for the socket meanwhile).
    plugin.collect_garbage();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(ServeError::Runtime)?;
    let plugin = Arc::new(plugin);
    let result = rt.block_on(async {
        let mut term = signal(SignalKind::terminate()).map_err(ServeError::Runtime)?;
        let mut int = signal(SignalKind::interrupt()).map_err(ServeError::Runtime)?;
        let listener = UnixListener::bind(socket).map_err(sock_err)?;
        tracing::info!(socket = %socket.display(), "serving Docker's network driver protocol");
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let stream = match accepted {
                        Ok((stream, _)) => stream,
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            continue;
                        }
                    };
                    let plugin = plugin.clone();
                    tokio::spawn(async move {
                        let service = service_fn(move |req| handle(plugin.clone(), req));
                        if let Err(e) = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await
                        {
                            tracing::warn!(error = %e, "connection failed");
                        }
                    });
                }
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
        tracing::info!("stopping");
        Ok(())
    });
    let _ = std::fs::remove_file(socket);
    // Calls in flight finish on the blocking pool when the runtime drops; their state is on
    // disk whatever happens.
    result
}

async fn handle(
    plugin: Arc<Plugin>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.uri().path().trim_start_matches('/').to_string();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return Ok(reply(StatusCode::BAD_REQUEST, &api::err(e))),
    };
    let answer = tokio::task::spawn_blocking(move || plugin.call(&method, &body)).await;
    Ok(match answer {
        Ok(v) => reply(StatusCode::OK, &v),
        Err(e) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            &api::err(format!("handler failed: {e}")),
        ),
    })
}

fn reply(status: StatusCode, v: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(
        serde_json::to_vec(v).expect("serializable"),
    )));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/vnd.docker.plugins.v1+json"),
    );
    r
}
