//! Delegation to another CNI plugin (an IPAM plugin such as host-local or static), exactly as a
//! runtime would call it: found by plain name on CNI_PATH, same environment, config on stdin.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use super::error::{CniError, FAILED};

/// Finds plugin `name` in the CNI_PATH directories. Names with '/' or ".." are refused before
/// any lookup: ferrynet never executes a path taken from its input.
pub fn find_plugin(name: &str, cni_path: &[PathBuf]) -> Result<PathBuf, CniError> {
    if name.is_empty() || name.contains('/') || name.contains("..") {
        return Err(CniError::config(format!(
            "plugin type {name:?} must be a plain name"
        )));
    }
    cni_path
        .iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            CniError::new(
                FAILED,
                format!("failed to find plugin {name:?} in CNI_PATH"),
            )
            .with_details(
                cni_path
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(":"),
            )
        })
}

/// Runs `plugin` with CNI_COMMAND=`command` (the rest of the environment is inherited) and
/// `stdin`; returns its parsed stdout (None when it printed nothing, as DEL does).
pub fn exec(plugin: &Path, command: &str, stdin: &[u8]) -> Result<Option<Value>, CniError> {
    let mut child = Command::new(plugin)
        .env("CNI_COMMAND", command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| CniError::new(FAILED, format!("failed to run {}: {e}", plugin.display())))?;
    if let Some(mut input) = child.stdin.take() {
        let _ = input.write_all(stdin);
    }
    let out = child
        .wait_with_output()
        .map_err(|e| CniError::new(FAILED, format!("failed to run {}: {e}", plugin.display())))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let parsed: Option<Value> = serde_json::from_str(stdout.trim()).ok();
    if !out.status.success() {
        let name = plugin
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let code = parsed
            .as_ref()
            .and_then(|v| v.get("code"))
            .and_then(Value::as_u64)
            .map(|c| c as u32)
            .unwrap_or(FAILED);
        let msg = parsed
            .as_ref()
            .and_then(|v| v.get("msg"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| {
                format!(
                    "{} {}",
                    stdout.trim(),
                    String::from_utf8_lossy(&out.stderr).trim()
                )
            });
        return Err(CniError::new(code, format!("{name} {command}: {msg}")));
    }
    Ok(parsed)
}
