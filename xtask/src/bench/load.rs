//! The workloads, each run in the bench's own network namespace so that the tracers' per-port
//! figures are the load's alone. Every round counts the connections it made: per-connection
//! figures divide by that count, not by a planned one.

use std::{
    ffi::c_int,
    fs::File,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};

/// Clients of the loopback loops: one per core of the 2-core development machines, as the
/// loop has always run.
const CLIENTS: usize = 2;
/// The paced loop's rate: the target is synscope's CPU at this many connections/s.
pub const PACED_RATE: u64 = 10_000;
/// wrk's open connections: enough to keep one nginx worker busy on two cores.
const WRK_CONNECTIONS: u32 = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// Clients connect and wait for the server's close; the server accept(2)s and closes.
    LoopClose,
    /// Clients connect, write a byte and wait; the server accept(2)s, reads it and closes.
    LoopByte,
    /// nginx (`return 204`, no keep-alive) under wrk, one request per connection.
    Nginx,
    /// loop-close held at 10,000 connections/s (PACED_RATE): the tracer's CPU at that rate,
    /// measured rather than scaled from a faster round (not all of it is per connection).
    LoopPaced,
}

impl Workload {
    pub const ALL: [Workload; 4] = [
        Workload::LoopClose,
        Workload::LoopByte,
        Workload::Nginx,
        Workload::LoopPaced,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Workload::LoopClose => "loop-close",
            Workload::LoopByte => "loop-byte",
            Workload::Nginx => "nginx",
            Workload::LoopPaced => "loop-paced",
        }
    }

    pub fn describe(self) -> String {
        match self {
            Workload::LoopClose => format!(
                "loopback connect/accept/close: {CLIENTS} clients connect and wait for the \
                 server's close; one server thread accept(2)s and closes"
            ),
            Workload::LoopByte => format!(
                "loopback connect/write/accept/read/close: {CLIENTS} clients connect, write a \
                 byte and wait; one server thread accept(2)s, reads the byte and closes"
            ),
            Workload::Nginx => format!(
                "nginx -> 204, keepalive_timeout 0, one worker; wrk -t1 -c{WRK_CONNECTIONS} \
                 -H 'Connection: close'"
            ),
            Workload::LoopPaced => format!(
                "loop-close held at {PACED_RATE} connections/s ({CLIENTS} clients, each on a \
                 schedule)"
            ),
        }
    }

    pub fn port(self) -> u16 {
        match self {
            Workload::LoopClose => 7700,
            Workload::LoopByte => 7701,
            Workload::Nginx => 7702,
            Workload::LoopPaced => 7703,
        }
    }
}

/// One round of load.
#[derive(Clone, Copy, Debug)]
pub struct Outcome {
    pub connections: u64,
    pub seconds: f64,
}

impl Outcome {
    pub fn rate(&self) -> f64 {
        self.connections as f64 / self.seconds
    }
}

/// A workload ready for rounds: nginx runs from the first round to the last.
pub struct Prepared {
    workload: Workload,
    netns: String,
    nginx: Option<Child>,
}

impl Prepared {
    pub fn start(workload: Workload, netns: &str, dir: &Path) -> anyhow::Result<Prepared> {
        let nginx = match workload {
            Workload::Nginx => Some(start_nginx(netns, dir, workload.port())?),
            _ => None,
        };
        Ok(Prepared {
            workload,
            netns: netns.to_owned(),
            nginx,
        })
    }

    pub fn round(&self, seconds: u64) -> anyhow::Result<Outcome> {
        let port = self.workload.port();
        match self.workload {
            Workload::LoopClose => loopback(&self.netns, port, seconds, false, None),
            Workload::LoopByte => loopback(&self.netns, port, seconds, true, None),
            Workload::LoopPaced => loopback(&self.netns, port, seconds, false, Some(PACED_RATE)),
            Workload::Nginx => wrk(&self.netns, port, seconds),
        }
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        if let Some(mut nginx) = self.nginx.take() {
            // nginx's fast shutdown; `ip netns exec` has exec'd it, so this is nginx's pid.
            crate::bench::tracer::signal(nginx.id(), crate::bench::tracer::SIGTERM);
            let _ = nginx.wait();
        }
    }
}

/// Enters the network namespace `/run/netns/NAME` on the calling thread (CLONE_NEWNET is per
/// thread), so the loop's sockets live there.
pub fn enter_netns(name: &str) -> anyhow::Result<()> {
    unsafe extern "C" {
        fn setns(fd: c_int, nstype: c_int) -> c_int;
    }
    const CLONE_NEWNET: c_int = 0x4000_0000;
    let namespace =
        File::open(format!("/run/netns/{name}")).with_context(|| format!("netns {name}"))?;
    // SAFETY: a valid namespace descriptor and a namespace type.
    if unsafe { setns(namespace.as_raw_fd(), CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error()).context("setns");
    }
    Ok(())
}

/// The connect/accept/close loop for `seconds`; `byte`: with a byte written and read;
/// `pace`: at most this many connections/s in all.
fn loopback(
    netns: &str,
    port: u16,
    seconds: u64,
    byte: bool,
    pace: Option<u64>,
) -> anyhow::Result<Outcome> {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let stop = Arc::new(AtomicBool::new(false));
    let (ready, listening) = mpsc::channel();
    let server = {
        let (netns, stop) = (netns.to_owned(), stop.clone());
        thread::spawn(move || -> anyhow::Result<()> {
            enter_netns(&netns)?;
            let listener = TcpListener::bind(address).with_context(|| format!("{address}"))?;
            let _ = ready.send(());
            loop {
                let (mut stream, _) = listener.accept().context("accept")?;
                if stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
                if byte {
                    stream.read_exact(&mut [0u8; 1]).context("server read")?;
                }
            }
        })
    };
    if listening.recv().is_err() {
        return Err(server
            .join()
            .map_err(|_| anyhow!("the server thread panicked"))?
            .err()
            .unwrap_or_else(|| anyhow!("the server stopped")));
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let netns = netns.to_owned();
            thread::spawn(move || -> anyhow::Result<u64> {
                enter_netns(&netns)?;
                let interval = pace.map(|rate| Duration::from_secs(CLIENTS as u64) / rate as u32);
                let mut made = 0;
                while Instant::now() < deadline {
                    // On a schedule, not a sleep per connection: a late connection is
                    // followed by earlier ones, so the rate holds on average.
                    if let Some(interval) = interval {
                        let due = started + interval * made as u32;
                        if due >= deadline {
                            break;
                        }
                        thread::sleep(due.saturating_duration_since(Instant::now()));
                    }
                    let mut stream = TcpStream::connect(address).context("connect")?;
                    if byte {
                        stream.write_all(b"x").context("client write")?;
                    }
                    // The server closes: end of file.
                    let _ = stream.read(&mut [0u8; 1]);
                    made += 1;
                }
                Ok(made)
            })
        })
        .collect();
    let mut connections = 0;
    let mut failure = None;
    for client in clients {
        match client.join() {
            Ok(Ok(made)) => connections += made,
            Ok(Err(e)) => failure = Some(e),
            Err(_) => failure = Some(anyhow!("a client thread panicked")),
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    // One more connection, not counted, wakes the server to see `stop`.
    stop.store(true, Ordering::Relaxed);
    let waker = {
        let netns = netns.to_owned();
        thread::spawn(move || -> anyhow::Result<()> {
            enter_netns(&netns)?;
            TcpStream::connect(address).context("connect")?;
            Ok(())
        })
    };
    let woken = waker.join().map_err(|_| anyhow!("panicked"))?;
    server
        .join()
        .map_err(|_| anyhow!("the server thread panicked"))??;
    if let Some(e) = failure {
        return Err(e);
    }
    woken?;
    Ok(Outcome {
        connections,
        seconds,
    })
}

fn start_nginx(netns: &str, dir: &Path, port: u16) -> anyhow::Result<Child> {
    let dir = dir.join("nginx");
    std::fs::create_dir_all(&dir)?;
    let d = dir.display();
    // Every path in the temporary directory: nothing of the machine's own nginx is used.
    let config = format!(
        "daemon off;\n\
         worker_processes 1;\n\
         pid {d}/nginx.pid;\n\
         error_log {d}/error.log;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n\
         \x20 access_log off;\n\
         \x20 keepalive_timeout 0;\n\
         \x20 client_body_temp_path {d}/body;\n\
         \x20 proxy_temp_path {d}/proxy;\n\
         \x20 fastcgi_temp_path {d}/fastcgi;\n\
         \x20 uwsgi_temp_path {d}/uwsgi;\n\
         \x20 scgi_temp_path {d}/scgi;\n\
         \x20 server {{ listen 127.0.0.1:{port} backlog=4096; location / {{ return 204; }} }}\n\
         }}\n"
    );
    let config_file = dir.join("nginx.conf");
    std::fs::write(&config_file, config)?;
    let log = File::create(dir.join("stderr.log"))?;
    let mut nginx = Command::new("ip")
        .args(["netns", "exec", netns, "nginx", "-e"])
        .arg(dir.join("error.log"))
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(&config_file)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("cannot start nginx")?;
    // Ready when it answers.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = nginx.try_wait()? {
            let log = std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default();
            bail!("nginx exited ({status}): {}", last_line(&log));
        }
        let probe = {
            let netns = netns.to_owned();
            thread::spawn(move || -> anyhow::Result<()> {
                enter_netns(&netns)?;
                TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port)))?;
                Ok(())
            })
        };
        if matches!(probe.join(), Ok(Ok(()))) {
            return Ok(nginx);
        }
        if Instant::now() > deadline {
            let _ = nginx.kill();
            bail!("nginx did not listen on port {port} within 10 s");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// One wrk run; with `Connection: close` (and nginx not keeping connections alive) each
/// request is one connection.
fn wrk(netns: &str, port: u16, seconds: u64) -> anyhow::Result<Outcome> {
    let output = crate::commands::output(Command::new("ip").args([
        "netns",
        "exec",
        netns,
        "wrk",
        "-t1",
        &format!("-c{WRK_CONNECTIONS}"),
        &format!("-d{seconds}s"),
        "-H",
        "Connection: close",
        &format!("http://127.0.0.1:{port}/"),
    ]))?;
    parse_wrk(&output)
}

/// "N requests in 5.00s, ...": completed requests only, so the connections that failed (wrk
/// says so, and the bench passes that on) are not counted.
fn parse_wrk(output: &str) -> anyhow::Result<Outcome> {
    if let Some(errors) = output.lines().find(|l| l.contains("Socket errors")) {
        eprintln!("bench: wrk: {}", errors.trim());
    }
    let line = output
        .lines()
        .find(|l| l.contains(" requests in "))
        .ok_or_else(|| anyhow!("no request count in wrk's output: {output}"))?;
    let (count, rest) = line
        .trim()
        .split_once(" requests in ")
        .context("wrk line")?;
    let duration = rest.split(',').next().unwrap_or_default();
    let seconds = if let Some(ms) = duration.strip_suffix("ms") {
        ms.parse::<f64>()? / 1e3
    } else if let Some(m) = duration.strip_suffix('m') {
        m.parse::<f64>()? * 60.0
    } else {
        duration.trim_end_matches('s').parse()?
    };
    Ok(Outcome {
        connections: count.trim().parse()?,
        seconds,
    })
}

pub fn last_line(text: &str) -> &str {
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_output_gives_connections_and_seconds() {
        let output = "Running 5s test @ http://127.0.0.1:7702/\n  1 threads and 4 connections\n\
                      \x20 50123 requests in 5.00s, 3.50MB read\nRequests/sec:  10024.60\n";
        let outcome = parse_wrk(output).unwrap();
        assert_eq!(outcome.connections, 50123);
        assert!((outcome.seconds - 5.0).abs() < 1e-9);
    }

    #[test]
    fn wrk_durations_take_their_unit() {
        let output = "  10 requests in 500.00ms, 1KB read\n  Socket errors: connect 3, read 0, \
                      write 0, timeout 0\n";
        let outcome = parse_wrk(output).unwrap();
        assert_eq!(outcome.connections, 10);
        assert!((outcome.seconds - 0.5).abs() < 1e-9);
        assert!(parse_wrk("no count").is_err());
    }
}
