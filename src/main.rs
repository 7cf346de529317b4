//! The `fieldsync` binary: everything is in [`fieldsync::cli`].

use std::process::ExitCode;

/// glibc's allocator returns and refaults the memory sled's page churn frees and takes again;
/// mimalloc keeps capture's allocation cost flat (see bench/capture.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    fieldsync::cli::main()
}
