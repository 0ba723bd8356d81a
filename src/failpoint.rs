//! Test-only crash points. Built with `--features failpoints`, the environment variable
//! `FERRYNET_FAILPOINT=NAME[:abort|:error]` makes the named step abort the process (like
//! `kill -9`: no unwinding, no cleanup) or fail with an error. Without the feature every
//! check compiles to nothing.

#[derive(Debug, thiserror::Error)]
#[error("failpoint {0} triggered")]
pub struct Triggered(pub &'static str);

#[cfg(feature = "failpoints")]
pub fn hit(name: &'static str) -> Result<(), Triggered> {
    let Ok(spec) = std::env::var("FERRYNET_FAILPOINT") else {
        return Ok(());
    };
    let (point, action) = spec.split_once(':').unwrap_or((spec.as_str(), "abort"));
    if point != name {
        return Ok(());
    }
    match action {
        "error" => Err(Triggered(name)),
        _ => std::process::abort(),
    }
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &'static str) -> Result<(), Triggered> {
    Ok(())
}
