//! Child processes and their CPU time: `wait4` gives the rusage of one child
//! (user + system seconds), `/proc/<pid>/stat` the CPU so far of one that is
//! still running.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// How a waited-for child ended, with the CPU it used over its whole life.
#[derive(Debug, Clone, Copy)]
pub struct Exit {
    /// `Some(code)` when it exited, `None` when a signal ended it.
    pub code: Option<i32>,
    /// User + system CPU seconds (from the kernel's rusage of that child).
    pub cpu_secs: f64,
}

impl Exit {
    /// Whether the child exited with status 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

fn tv_secs(tv: libc::timeval) -> f64 {
    tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6
}

/// Reaps `child` with `wait4`, which also returns its resource usage.
/// The `Child` must not be waited for or killed afterwards (its pid is gone).
pub fn wait(child: &Child) -> Result<Exit> {
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: zeroed rusage is a valid value of a plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: plain syscall on our own child's pid with valid out-pointers.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        return Err(err).with_context(|| format!("wait4 pid {pid}"));
    }
    let code = if libc::WIFEXITED(status) {
        Some(libc::WEXITSTATUS(status))
    } else {
        None
    };
    Ok(Exit {
        code,
        cpu_secs: tv_secs(usage.ru_utime) + tv_secs(usage.ru_stime),
    })
}

/// Reaps `child` if it has ended (see [`wait`]); `None` while it runs.
pub fn try_wait(child: &Child) -> Result<Option<Exit>> {
    let pid = child.id() as libc::pid_t;
    // SAFETY: zeroed siginfo is a valid out-value for waitid.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer; WNOWAIT leaves the child waitable for wait4.
    let r = unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("waitid pid {pid}"));
    }
    // SAFETY: reading si_pid of a siginfo filled (or left zeroed) by waitid.
    if unsafe { info.si_pid() } == pid {
        wait(child).map(Some)
    } else {
        Ok(None)
    }
}

/// Waits for `child` at most `limit`; kills it (SIGKILL) and reaps it when the
/// limit passes. Returns `None` if it had to be killed.
pub fn wait_timeout(child: &Child, limit: Duration) -> Result<Option<Exit>> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(exit) = try_wait(child)? {
            return Ok(Some(exit));
        }
        if Instant::now() >= deadline {
            kill(child);
            let _ = wait(child)?;
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends SIGKILL to a child that has not been reaped yet.
pub fn kill(child: &Child) {
    // SAFETY: signal to our own unreaped child's pid.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGKILL);
    }
}

/// Sends SIGTERM to a child that has not been reaped yet.
pub fn terminate(child: &Child) {
    // SAFETY: signal to our own unreaped child's pid.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
}

/// CPU seconds (user + system) a running process has used so far, from
/// `/proc/<pid>/stat` (fields 14 and 15, in clock ticks).
pub fn proc_cpu_secs(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let after = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .context("malformed /proc stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state); utime is field 14, stime field 15.
    if fields.len() < 13 {
        bail!("short /proc/{pid}/stat");
    }
    let utime: f64 = fields[11].parse().context("utime")?;
    let stime: f64 = fields[12].parse().context("stime")?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((utime + stime) / if hz > 0.0 { hz } else { 100.0 })
}

/// A loopback port that was free for both TCP and UDP a moment ago.
pub fn free_port() -> Result<u16> {
    for _ in 0..50 {
        let tcp = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("bind tcp")?;
        let port = tcp.local_addr()?.port();
        if UdpSocket::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free loopback port")
}
