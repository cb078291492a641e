//! The host end of the sample link ([`fdgr_kernel::link`]) to a live
//! image: requests out, replies back, over QEMU's UART0 (a Unix socket
//! that QEMU serves as its first `-serial`).
//!
//! [`Session::qemu`] boots the live image of `qemu-m4` in a state
//! directory: the emulated flash is the file `fdgr-flash.bin` there, so
//! what the device saved survives the session, as a board's flash survives
//! a reset. [`Session::kill`] is a power cut: QEMU is killed at once,
//! whatever the device was doing.

use fdgr_kernel::link::{self, Decoder, Input, Kind, Nack, Reply, Request, Status};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// A reply, owned.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// Rejected, with the reason.
    Nack(Nack),
    /// A learn request's outcome: the class predicted before the step, and
    /// the step's loss.
    Ack {
        /// Predicted before learning.
        class: u16,
        /// The loss of the step.
        loss: f32,
    },
    /// A prediction.
    Prediction {
        /// The arg max.
        class: u16,
        /// Every class's score.
        scores: Vec<f32>,
    },
    /// The device's status.
    Status(Status),
    /// A chunk of weights.
    Weights {
        /// Index of the first.
        offset: u32,
        /// Weights in all.
        total: u32,
        /// The values.
        values: Vec<f32>,
    },
}

impl Answer {
    fn of(r: &Reply<'_>) -> Answer {
        match r {
            Reply::Nack(n) => Answer::Nack(*n),
            Reply::Ack { class, loss } => Answer::Ack {
                class: *class,
                loss: *loss,
            },
            Reply::Prediction { class, scores } => Answer::Prediction {
                class: *class,
                scores: scores.iter().collect(),
            },
            Reply::Status(s) => Answer::Status(*s),
            Reply::Weights {
                offset,
                total,
                values,
            } => Answer::Weights {
                offset: *offset,
                total: *total,
                values: values.iter().collect(),
            },
        }
    }
}

/// A byte transport to the device: QEMU's UART socket, or a serial port.
trait Port: Send {
    /// Sends all of `b`.
    fn send(&mut self, b: &[u8]) -> std::io::Result<()>;
    /// Receives some bytes (at least one), or fails when none come in time.
    fn recv(&mut self, buf: &mut [u8]) -> std::io::Result<usize>;
}

impl Port for UnixStream {
    fn send(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.write_all(b)
    }
    fn recv(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.read(buf)
    }
}

/// A serial port (a board's UART through a USB adapter or a probe's
/// virtual COM port): written directly, read by a thread.
struct Serial {
    file: std::fs::File,
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    pending: Vec<u8>,
    timeout: Duration,
}

impl Port for Serial {
    fn send(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.file.write_all(b)?;
        self.file.flush()
    }
    fn recv(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pending.is_empty() {
            match self.rx.recv_timeout(self.timeout) {
                Ok(b) => self.pending = b,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "no bytes from the serial port in time",
                    ))
                }
                Err(_) => return Ok(0),
            }
        }
        let n = self.pending.len().min(buf.len());
        buf[..n].copy_from_slice(&self.pending[..n]);
        self.pending.drain(..n);
        Ok(n)
    }
}

/// A live device on the other end of the link.
pub struct Session {
    child: Option<Child>,
    port: Box<dyn Port>,
    sock_path: Option<PathBuf>,
    dec: Box<Decoder<{ link::MAX_FRAME }>>,
    seq: u16,
    out: Vec<u8>,
    log: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    /// Bytes sent and received.
    pub traffic: (u64, u64),
    /// Sends of a request before giving up (each waits [`ATTEMPT`]).
    attempts: u32,
}

/// How long one send of a request waits for its reply before the request
/// is sent again (same sequence number: a repeated learn request is
/// answered from the device's replay record, not learned twice). A board
/// reads nothing while it erases flash, so a request sent then is lost.
pub const ATTEMPT: Duration = Duration::from_secs(4);

fn attempts(timeout: Duration) -> u32 {
    (timeout.as_secs_f64() / ATTEMPT.as_secs_f64())
        .ceil()
        .max(1.0) as u32
}

static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Session {
    /// Boots `elf` (a live image of `qemu-m4`) under QEMU with its flash in
    /// `state_dir/fdgr-flash.bin`, and connects to its UART. `timeout`
    /// bounds every reply.
    pub fn qemu(elf: &Path, state_dir: &Path, timeout: Duration) -> Result<Session, String> {
        Session::qemu_with(elf, state_dir, timeout, &[])
    }

    /// [`Session::qemu`] with more QEMU arguments (e.g. the
    /// instruction-count plugin).
    pub fn qemu_with(
        elf: &Path,
        state_dir: &Path,
        timeout: Duration,
        extra: &[String],
    ) -> Result<Session, String> {
        std::fs::create_dir_all(state_dir).map_err(|e| format!("{}: {e}", state_dir.display()))?;
        // QEMU runs in the state directory: the image by its absolute path
        let elf = std::fs::canonicalize(elf).map_err(|e| format!("{}: {e}", elf.display()))?;
        let elf = elf.as_path();
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let sock_path =
            std::env::temp_dir().join(format!("fdgr-link-{}-{n}.sock", std::process::id()));
        let _ = std::fs::remove_file(&sock_path);
        let mut q = std::process::Command::new("qemu-system-arm");
        for a in crate::qemu::QEMU_M4_ARGS {
            // the UART goes to the socket instead of nowhere
            q.arg(if a == "null" { "chardev:link" } else { a });
        }
        q.arg("-chardev")
            .arg(format!(
                "socket,id=link,path={},server=on,wait=on",
                sock_path.display()
            ))
            .args(extra)
            .arg("-kernel")
            .arg(elf)
            .current_dir(state_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = q
            .spawn()
            .map_err(|e| format!("qemu-system-arm: cannot start it: {e}"))?;
        let t0 = Instant::now();
        let sock = loop {
            match UnixStream::connect(&sock_path) {
                Ok(s) => break s,
                Err(_) if t0.elapsed() < Duration::from_secs(20) => {
                    if let Ok(Some(st)) = child.try_wait() {
                        let mut err = String::new();
                        if let Some(mut e) = child.stderr.take() {
                            let _ = e.read_to_string(&mut err);
                        }
                        return Err(format!(
                            "QEMU exited ({st}) before the link opened: {}",
                            err.trim()
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("{}: cannot connect: {e}", sock_path.display()));
                }
            }
        };
        sock.set_read_timeout(Some(ATTEMPT.min(timeout)))
            .map_err(|e| e.to_string())?;
        // the defmt log (semihosting stdout), collected as it comes
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let reader = child.stdout.take().map(|mut out| {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut b = [0u8; 4096];
                while let Ok(n) = out.read(&mut b) {
                    if n == 0 {
                        break;
                    }
                    if let Ok(mut l) = log.lock() {
                        l.extend_from_slice(&b[..n]);
                    }
                }
            })
        });
        Ok(Session {
            child: Some(child),
            port: Box::new(sock),
            sock_path: Some(sock_path),
            dec: Box::new(Decoder::new()),
            seq: 0,
            out: vec![0u8; link::MAX_FRAME],
            log,
            reader,
            traffic: (0, 0),
            attempts: attempts(timeout),
        })
    }

    /// Sends `r` and waits for its reply (replies to earlier requests, if
    /// any came late, are skipped by their sequence number).
    pub fn request(&mut self, r: &Request<'_>) -> Result<Answer, String> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let n = r
            .encode(seq, &mut self.out)
            .map_err(|e| format!("cannot encode the request: {e:?}"))?;
        self.port
            .send(&self.out[..n])
            .map_err(|e| format!("link: {e}"))?;
        self.traffic.0 += n as u64;
        let mut b = [0u8; 512];
        let mut sent = 1;
        loop {
            let got = match self.port.recv(&mut b) {
                Ok(g) => g,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
                    ) && sent < self.attempts =>
                {
                    // lost (the device was busy): the same frame again
                    self.port
                        .send(&self.out[..n])
                        .map_err(|e| format!("link: {e}"))?;
                    self.traffic.0 += n as u64;
                    sent += 1;
                    continue;
                }
                Err(e) => {
                    return Err(format!(
                        "link: no reply to {:?} request {seq} after {sent} sends: {e}",
                        r.kind()
                    ))
                }
            };
            if got == 0 {
                return Err(format!("link: the device closed the link (request {seq})"));
            }
            self.traffic.1 += got as u64;
            let mut rest = &b[..got];
            let mut answer = None;
            while !rest.is_empty() {
                let (used, res) = self.dec.feed(rest);
                rest = rest.get(used..).unwrap_or(&[]);
                match res {
                    Some(Ok(f)) if f.seq == seq => {
                        let reply = link::parse_reply(&f)
                            .map_err(|n| format!("link: a bad reply ({n:?})"))?;
                        answer = Some(Answer::of(&reply));
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(format!("link: a corrupt reply: {e:?}")),
                    None => {}
                }
            }
            if let Some(a) = answer {
                return Ok(a);
            }
        }
    }

    /// Sends `r` without waiting for its reply (to cut the power while
    /// the device works on it).
    pub fn send_only(&mut self, r: &Request<'_>) -> Result<(), String> {
        self.seq = self.seq.wrapping_add(1);
        let n = r
            .encode(self.seq, &mut self.out)
            .map_err(|e| format!("cannot encode the request: {e:?}"))?;
        self.port
            .send(&self.out[..n])
            .map_err(|e| format!("link: {e}"))?;
        self.traffic.0 += n as u64;
        Ok(())
    }

    /// The device's status.
    pub fn status(&mut self) -> Result<Status, String> {
        match self.request(&Request::Status)? {
            Answer::Status(s) => Ok(s),
            a => Err(format!("status: unexpected reply {a:?}")),
        }
    }

    /// Learns from pixels `x` with label `y`: (class predicted before, loss).
    pub fn learn(&mut self, x: &[u8], y: u16) -> Result<Answer, String> {
        self.request(&Request::Learn {
            x: Input::U8(x),
            label: y,
        })
    }

    /// The class the device predicts for pixels `x`.
    pub fn predict(&mut self, x: &[u8]) -> Result<(u16, Vec<f32>), String> {
        match self.request(&Request::Predict { x: Input::U8(x) })? {
            Answer::Prediction { class, scores } => Ok((class, scores)),
            a => Err(format!("predict: unexpected reply {a:?}")),
        }
    }

    /// Saves the state now (`Save`); the status after it.
    pub fn save(&mut self) -> Result<Status, String> {
        match self.request(&Request::Save)? {
            Answer::Status(s) => Ok(s),
            a => Err(format!("save: unexpected reply {a:?}")),
        }
    }

    /// Restores the factory model (and saves it); the status after it.
    pub fn factory_reset(&mut self) -> Result<Status, String> {
        match self.request(&Request::FactoryReset)? {
            Answer::Status(s) => Ok(s),
            a => Err(format!("factory reset: unexpected reply {a:?}")),
        }
    }

    /// Every weight of the model as the device holds it now.
    pub fn pull(&mut self) -> Result<Vec<f32>, String> {
        let mut theta = vec![];
        loop {
            let offset = theta.len() as u32;
            match self.request(&Request::Pull {
                offset,
                count: u16::MAX,
            })? {
                Answer::Weights {
                    offset: o,
                    total,
                    values,
                } if o == offset => {
                    if values.is_empty() && (theta.len() as u32) < total {
                        return Err("pull: the device sent no weights".into());
                    }
                    theta.extend(values);
                    if theta.len() as u32 >= total {
                        theta.truncate(total as usize);
                        return Ok(theta);
                    }
                }
                a => return Err(format!("pull: unexpected reply {a:?}")),
            }
        }
    }

    /// The defmt bytes the device logged so far.
    pub fn log(&self) -> Vec<u8> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Stops QEMU in order (SIGTERM: its plugins write their results);
    /// returns the defmt bytes logged. A serial port is just closed.
    pub fn stop(mut self) -> Vec<u8> {
        if let Some(child) = self.child.as_mut() {
            let pid = child.id().to_string();
            let termed = std::process::Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if termed {
                let t0 = Instant::now();
                while t0.elapsed() < Duration::from_secs(10) {
                    if let Ok(Some(_)) = child.try_wait() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        self.kill()
    }

    /// Cuts the power: kills QEMU at once; returns the defmt bytes logged.
    /// A serial port is just closed (the board runs on).
    pub fn kill(mut self) -> Vec<u8> {
        self.end();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        self.log()
    }

    fn end(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(p) = self.sock_path.take() {
            let _ = std::fs::remove_file(p);
        }
    }

    /// A device already running at the other end of a serial port (a
    /// board flashed with the live image; its log goes its own way, e.g.
    /// RTT through probe-rs): the port is set to `baud`, raw, with `stty`.
    pub fn serial(port: &Path, baud: u32, timeout: Duration) -> Result<Session, String> {
        let st = std::process::Command::new("stty")
            .arg("-F")
            .arg(port)
            .args([
                &baud.to_string(),
                "raw",
                "-echo",
                "-ixon",
                "-ixoff",
                "-crtscts",
                "clocal",
            ])
            .output()
            .map_err(|e| format!("stty: cannot run it: {e}"))?;
        if !st.status.success() {
            return Err(format!(
                "{}: cannot set it to {baud} baud, raw: {}",
                port.display(),
                String::from_utf8_lossy(&st.stderr).trim()
            ));
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(port)
            .map_err(|e| format!("{}: {e}", port.display()))?;
        let mut rd = file
            .try_clone()
            .map_err(|e| format!("{}: {e}", port.display()))?;
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut b = [0u8; 512];
            while let Ok(n) = rd.read(&mut b) {
                if n == 0 || tx.send(b[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        // the reader thread ends with the port; it is not joined
        drop(reader);
        Ok(Session {
            child: None,
            port: Box::new(Serial {
                file,
                rx,
                pending: vec![],
                timeout: ATTEMPT.min(timeout),
            }),
            sock_path: None,
            dec: Box::new(Decoder::new()),
            seq: 0,
            out: vec![0u8; link::MAX_FRAME],
            log: std::sync::Arc::new(std::sync::Mutex::new(Vec::new())),
            reader: None,
            traffic: (0, 0),
            attempts: attempts(timeout),
        })
    }

    /// The request type of `kind`, for messages.
    pub fn kind_name(kind: Kind) -> &'static str {
        match kind {
            Kind::Learn => "learn",
            Kind::Predict => "predict",
            Kind::Status => "status",
            Kind::Pull => "pull",
            Kind::FactoryReset => "factory-reset",
            Kind::Save => "save",
            _ => "reply",
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.end();
    }
}
