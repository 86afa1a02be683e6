//! `tryst`: the reference binary, the shared CLI ([`tryst_std::cli`]) on
//! the tokio driver. Exit codes: 0 success; 2 usage or configuration
//! error; 3 not permitted; 1 anything else; errors are one `tryst: ...`
//! line on stderr.

use std::process::ExitCode;

use tryst_tokio::cli::TokioRuntime;

fn main() -> ExitCode {
    tryst_std::cli::main("tryst", TokioRuntime)
}
