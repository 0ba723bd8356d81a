//! The CNI plugin alone: what `ferrynet` does when a runtime calls it with `CNI_COMMAND`, in
//! a binary that links nothing of the CLI or the agent (no clap, no etcd client, no async
//! runtime). A runtime starts one process per ADD/DEL, so the start-up of a smaller binary is
//! saved on every container: install it as the CNI type's name, `/opt/cni/bin/ferrynet`.

use std::process::ExitCode;

fn main() -> ExitCode {
    ferrynet::cni::main()
}
