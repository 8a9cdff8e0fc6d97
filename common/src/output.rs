//! Command output for both CLIs: a line on stdout that ends the program quietly when
//! stdout is a closed pipe (`lanyard status --json | head -1`, `lanyard-ca audit | head`)
//! instead of panicking as `println!` does.

/// Writes `args` and a newline to stdout. On a closed pipe the program exits 0; on any
/// other write error it says so, naming `program`, and exits 1.
pub fn write_line(program: &str, args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("{program}: writing to stdout: {e}");
        std::process::exit(1);
    }
}

/// `println!` through [`write_line`], naming the binary that calls it.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::write_line(env!("CARGO_BIN_NAME"), format_args!($($arg)*))
    };
}
