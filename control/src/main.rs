//! `ktx` binary: parse the command line, start logging, run the command on a tokio runtime, and
//! print the error (which says what to do) when it fails.

use std::process::ExitCode;

use ktx::cli::Command;
use ktx::config::layers::ResolveError;
use tracing_subscriber::EnvFilter;

// mimalloc, as in the router and the shadow. On a marked download ktx reads the developer's
// bytes into a new buffer per read (`ktx_tunnel::splice`), which h2 frees once sent, often on
// the other worker thread; glibc's malloc gave those buffers fresh pages again and again (a
// tenth of ktx's CPU was page faults, `perf` on `loadtests/portforward_cpu.sh --mesh`).
// mimalloc keeps freed pages for reuse.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // The command line, with the defaults of the profile and config file (`ktx config`).
    let resolved = match ktx::config::resolve(std::env::args_os()) {
        Ok(r) => r,
        Err(ResolveError::Clap(e)) => e.exit(),
        Err(ResolveError::Config(e)) => {
            eprintln!("ktx: {e}");
            return ExitCode::FAILURE;
        }
    };
    // ktx reports what matters itself (progress lines, errors that say what to do); the
    // libraries' own logs are for -v.
    let level = match resolved.cli.global.verbose {
        // (`ktx` also matches `ktx_tunnel`: directives are prefixes.)
        0 => "ktx=warn,ktx_tunnel=error",
        1 => "ktx=debug,ktx_tunnel=info,warn",
        _ => "ktx=trace,ktx_tunnel=debug,info",
    };
    if let Command::Janitor(args) = &resolved.cli.command {
        // In the cluster, like the router and the shadow: its logs are its only output.
        if let Err(e) = ktx_telemetry::init_logging(args.log_format, &args.log_level) {
            eprintln!("ktx: {e}");
            return ExitCode::FAILURE;
        }
    } else {
        let filter = EnvFilter::try_from_env("KTX_LOG").unwrap_or_else(|_| EnvFilter::new(level));
        // Colours only on a terminal: piped into a file or CI log, escapes garble the text.
        use std::io::IsTerminal;
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .init();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ktx: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(ktx::run_resolved(resolved)) {
        Ok(()) => ExitCode::SUCCESS,
        // `-- CMD` ended the session: ktx exits as CMD did.
        Err(e @ ktx::Error::CommandExited { code, .. }) => {
            eprintln!("ktx: {e}");
            ExitCode::from(code)
        }
        Err(e) => {
            // The error's text already carries its cause and what to do about it.
            eprintln!("ktx: {e}");
            ExitCode::FAILURE
        }
    }
}
