//! `ktx-shadow`: not built yet — the tunnel issue builds it. Exits non-zero so nobody mistakes
//! it for a working shadow.

fn main() -> std::process::ExitCode {
    eprintln!("ktx-shadow: not implemented yet (see the tunnel issue)");
    std::process::ExitCode::from(2)
}
