use std::process::ExitCode;

fn main() -> ExitCode {
    // One binary: the CNI plugin when a runtime calls it (CNI_COMMAND set), the CLI otherwise.
    if ferrynet::cni::is_cni_invocation() {
        ferrynet::cni::main()
    } else {
        ferrynet::cli::main()
    }
}
