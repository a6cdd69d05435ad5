//! `ktx`: not built yet — the control-plane issue builds it. Exits non-zero so nobody mistakes
//! it for a working command.

fn main() -> std::process::ExitCode {
    eprintln!("ktx: not implemented yet (see the control-plane issue)");
    std::process::ExitCode::from(2)
}
