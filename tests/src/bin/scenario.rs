//! A server and its clients in one process, for the integration tests: one listening socket,
//! `--connections` clients that each connect, wait for the server to close, and go, and a server
//! that accepts each pending connection `--accept-delay-ms` after it entered the accept queue.
//!
//! Exits 0 only when every connection was made and accepted, and prints how many were.

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
    let options = parse_options()?;
    let socket = Socket::new(Domain::for_address(options.listen), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if options.listen.is_ipv6() {
        // [::] also takes IPv4 clients (v4-mapped), as most servers configure it.
        socket.set_only_v6(false)?;
    }
    socket
        .bind(&options.listen.into())
        .with_context(|| format!("bind {}", options.listen))?;
    // Large enough that no test connection is ever dropped.
    socket.listen(4096)?;
    let listener: TcpListener = socket.into();

    let server = {
        let (connections, delay) = (options.connections, options.accept_delay);
        thread::spawn(move || serve(listener, connections, delay))
    };
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
        "scenario: {accepted} connections accepted on {}",
        options.listen
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
