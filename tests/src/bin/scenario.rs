//! Servers and clients for the integration tests.
//!
//! `scenario --listen ADDR ...`: a server and its clients in one process: `--connections`
//! clients that each connect, wait for the server to close, and go, and a server that accepts
//! each pending connection `--accept-delay-ms` after it entered the accept queue. Exits 0 only
//! when every connection was made and accepted.
//!
//! `scenario serve --listen ADDR --backlog N --accept-after-ms T --duration-ms D`: a server
//! alone, that accepts nothing for T ms (its queues fill), then accepts whatever comes, and
//! closes after D ms.
//!
//! `scenario connect --to ADDR --connections N --hold-ms H --timeout-ms X`: N concurrent
//! clients that connect (giving up after X ms) and hold the connection for H ms. Some may fail
//! by design (a full queue): it prints how many connected and exits 0.

use std::{
    io::Read as _,
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    thread,
    time::Duration,
};

use anyhow::{Context as _, bail};
use socket2::{Domain, Socket, Type};

struct Options {
    listen: SocketAddr,
    connect: SocketAddr,
    connections: usize,
    concurrency: usize,
    accept_delay: Duration,
}

fn parse_options() -> anyhow::Result<Options> {
    let mut listen = None;
    let mut connect = None;
    let mut connections = 10;
    let mut concurrency = 1;
    let mut accept_delay_ms = 0;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => listen = Some(value.parse()?),
            "--connect" => connect = Some(value.parse()?),
            "--connections" => connections = value.parse()?,
            "--concurrency" => concurrency = value.parse()?,
            "--accept-delay-ms" => accept_delay_ms = value.parse()?,
            other => bail!("unknown flag {other}"),
        }
    }
    let listen: SocketAddr = listen.context("--listen ADDR:PORT is required")?;
    Ok(Options {
        listen,
        connect: connect.unwrap_or(listen),
        connections,
        concurrency: concurrency.max(1),
        accept_delay: Duration::from_millis(accept_delay_ms),
    })
}

fn main() -> anyhow::Result<()> {
    match std::env::args().nth(1).as_deref() {
        Some("serve") => serve_alone(&flags(2)?),
        Some("connect") => connect_alone(&flags(2)?),
        _ => together(),
    }
}

/// `--name value` pairs from argv[skip..].
fn flags(skip: usize) -> anyhow::Result<std::collections::HashMap<String, String>> {
    let args: Vec<String> = std::env::args().skip(skip).collect();
    if !args.len().is_multiple_of(2) {
        bail!("flags come in --name value pairs");
    }
    Ok(args
        .chunks(2)
        .map(|pair| (pair[0].trim_start_matches("--").to_owned(), pair[1].clone()))
        .collect())
}

fn flag<T: std::str::FromStr>(
    flags: &std::collections::HashMap<String, String>,
    name: &str,
    default: Option<T>,
) -> anyhow::Result<T>
where
    T::Err: std::fmt::Display,
{
    match (flags.get(name), default) {
        (Some(value), _) => value
            .parse()
            .map_err(|e| anyhow::anyhow!("--{name} {value}: {e}")),
        (None, Some(default)) => Ok(default),
        (None, None) => bail!("--{name} is required"),
    }
}

fn listener(addr: SocketAddr, backlog: i32) -> anyhow::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        // [::] also takes IPv4 clients (v4-mapped), as most servers configure it.
        socket.set_only_v6(false)?;
    }
    socket
        .bind(&addr.into())
        .with_context(|| format!("bind {addr}"))?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

fn serve_alone(flags: &std::collections::HashMap<String, String>) -> anyhow::Result<()> {
    let addr: SocketAddr = flag(flags, "listen", None)?;
    let listener = listener(addr, flag(flags, "backlog", Some(128))?)?;
    let accept_after = Duration::from_millis(flag(flags, "accept-after-ms", Some(0))?);
    let deadline =
        std::time::Instant::now() + Duration::from_millis(flag(flags, "duration-ms", None)?);
    thread::sleep(accept_after.min(deadline.saturating_duration_since(std::time::Instant::now())));
    listener.set_nonblocking(true)?;
    let mut accepted = 0;
    let mut held = Vec::new();
    while std::time::Instant::now() < deadline {
        match listener.accept() {
            Ok((stream, _)) => {
                accepted += 1;
                held.push(stream);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e.into()),
        }
    }
    println!("scenario: {accepted} connections accepted on {addr}");
    Ok(())
}

fn connect_alone(flags: &std::collections::HashMap<String, String>) -> anyhow::Result<()> {
    let target: SocketAddr = flag(flags, "to", None)?;
    let connections: usize = flag(flags, "connections", None)?;
    let hold = Duration::from_millis(flag(flags, "hold-ms", Some(0))?);
    let timeout = Duration::from_millis(flag(flags, "timeout-ms", Some(3000))?);
    let clients: Vec<_> = (0..connections)
        .map(|_| {
            thread::spawn(move || {
                let stream = TcpStream::connect_timeout(&target, timeout).ok()?;
                thread::sleep(hold);
                Some(stream)
            })
        })
        .collect();
    let connected = clients
        .into_iter()
        .map(|c| c.join())
        .filter(|joined| matches!(joined, Ok(Some(_))))
        .count();
    println!("scenario: {connected} of {connections} connected to {target}");
    Ok(())
}

fn together() -> anyhow::Result<()> {
    let options = parse_options()?;
    // Large enough that no test connection is ever dropped.
    let listener = listener(options.listen, 4096)?;

    let server = {
        let (connections, delay) = (options.connections, options.accept_delay);
        thread::spawn(move || serve(listener, connections, delay))
    };
    let started = std::time::Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..options.concurrency)
        .map(|_| {
            let (next, target, total) = (next.clone(), options.connect, options.connections);
            thread::spawn(move || -> anyhow::Result<()> {
                while next.fetch_add(1, Ordering::SeqCst) < total {
                    let mut stream =
                        TcpStream::connect(target).with_context(|| format!("connect {target}"))?;
                    // The server closes after accept(): wait for it, so each connection's
                    // accept-queue wait is the server's alone.
                    let _ = stream.read(&mut [0u8; 1]);
                }
                Ok(())
            })
        })
        .collect();
    for client in clients {
        client.join().expect("client thread panicked")?;
    }
    let accepted = server.join().expect("server thread panicked")?;
    println!(
        "scenario: {accepted} connections accepted on {} in {} us",
        options.listen,
        started.elapsed().as_micros()
    );
    Ok(())
}

/// Accepts `connections` connections, each `delay` after it became acceptable.
fn serve(listener: TcpListener, connections: usize, delay: Duration) -> anyhow::Result<usize> {
    for _ in 0..connections {
        wait_acceptable(&listener)?;
        thread::sleep(delay);
        let (stream, _) = listener.accept()?;
        drop(stream);
    }
    Ok(connections)
}

/// Blocks until the accept queue holds a connection (poll for POLLIN on the listener).
fn wait_acceptable(listener: &TcpListener) -> anyhow::Result<()> {
    let mut fd = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut fd, 1, 10_000) };
        match ready {
            1 => return Ok(()),
            0 => bail!("no connection arrived within 10 s"),
            _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
            _ => return Err(std::io::Error::last_os_error().into()),
        }
    }
}
