//! The `clawfort` command; all behaviour lives in the library (`clawfort::cli`).

fn main() -> std::process::ExitCode {
    clawfort::cli::main()
}
