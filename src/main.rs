use std::process::ExitCode;

fn main() -> ExitCode {
    ferrynet::cli::main()
}
