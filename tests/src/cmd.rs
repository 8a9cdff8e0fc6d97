//! Running programs: every call captures stdout and stderr, and a failed expectation
//! panics with the command line and both streams, so a red test explains itself.

use std::ffi::OsStr;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// What a finished command left behind.
#[derive(Debug, Clone)]
pub struct Out {
    /// The command line, for messages.
    pub cmdline: String,
    /// Exit code; `None` when a signal ended the process.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// stdout as bytes, for binary output (DER).
    pub raw_stdout: Vec<u8>,
}

impl Out {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// stdout then stderr, for matching messages wherever a program prints them.
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// Panics unless the command exited 0.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert!(self.success(), "command failed:\n{self}");
        self
    }

    /// Panics if the command exited 0.
    #[track_caller]
    pub fn fails(self) -> Self {
        assert!(!self.success(), "command should have failed:\n{self}");
        self
    }
}

impl std::fmt::Display for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "$ {}", self.cmdline)?;
        writeln!(f, "exit: {:?}", self.code)?;
        writeln!(f, "--- stdout\n{}", self.stdout.trim_end())?;
        write!(f, "--- stderr\n{}", self.stderr.trim_end())
    }
}

fn cmdline(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        let a = a.to_string_lossy();
        if a.is_empty() || a.contains([' ', '"', '\'', '$']) {
            s.push_str(&format!("{a:?}"));
        } else {
            s.push_str(&a);
        }
    }
    s
}

/// Runs `cmd` with `stdin` as its input (empty if `None`) and captures its output.
/// Panics only if the program cannot be started at all.
pub fn run_cmd(cmd: &mut Command, stdin: Option<&[u8]>) -> Out {
    let line = cmdline(cmd);
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start `{line}`: {e}"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        // Write from a thread: a large input could otherwise fill the pipe while the
        // child waits for us to read its output.
        let input = input.to_vec();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
    }
    let o = child.wait_with_output().unwrap_or_else(|e| panic!("waiting for `{line}`: {e}"));
    Out {
        cmdline: line,
        code: o.status.code(),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        raw_stdout: o.stdout,
    }
}

/// Runs `program args...` in the current directory.
pub fn run<S: AsRef<OsStr>>(program: impl AsRef<OsStr>, args: &[S]) -> Out {
    run_cmd(Command::new(program).args(args), None)
}

/// Runs `program args...` in `dir`.
pub fn run_in<S: AsRef<OsStr>>(dir: &Path, program: impl AsRef<OsStr>, args: &[S]) -> Out {
    run_cmd(Command::new(program).args(args).current_dir(dir), None)
}

/// Runs `program args...` with `input` on stdin.
pub fn run_stdin<S: AsRef<OsStr>>(program: impl AsRef<OsStr>, args: &[S], input: &[u8]) -> Out {
    run_cmd(Command::new(program).args(args), Some(input))
}

/// Raises this process's open-file limit (inherited by the CA it starts) towards `want`,
/// as far as the hard limit allows; answers the new soft limit. For tests that hold
/// thousands of sockets at once.
pub fn raise_fd_limit(want: u64) -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else { return 0 };
    if soft < want {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, want.min(hard), hard);
    }
    getrlimit(Resource::RLIMIT_NOFILE).map_or(soft, |(s, _)| s)
}
