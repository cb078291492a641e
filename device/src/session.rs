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

/// A live device on the other end of the link.
pub struct Session {
    child: Child,
    sock: UnixStream,
    sock_path: PathBuf,
    dec: Box<Decoder<{ link::MAX_FRAME }>>,
    seq: u16,
    out: Vec<u8>,
    log: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    /// Bytes sent and received.
    pub traffic: (u64, u64),
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
        sock.set_read_timeout(Some(timeout))
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
            child,
            sock,
            sock_path,
            dec: Box::new(Decoder::new()),
            seq: 0,
            out: vec![0u8; link::MAX_FRAME],
            log,
            reader,
            traffic: (0, 0),
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
        self.sock
            .write_all(&self.out[..n])
            .map_err(|e| format!("link: {e}"))?;
        self.traffic.0 += n as u64;
        let mut b = [0u8; 512];
        loop {
            let got = self
                .sock
                .read(&mut b)
                .map_err(|e| format!("link: no reply to {:?} request {seq}: {e}", r.kind()))?;
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
        self.sock
            .write_all(&self.out[..n])
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
    /// returns the defmt bytes logged.
    pub fn stop(mut self) -> Vec<u8> {
        let pid = self.child.id().to_string();
        let termed = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if termed {
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = self.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        self.kill()
    }

    /// Cuts the power: kills QEMU at once; returns the defmt bytes logged.
    pub fn kill(mut self) -> Vec<u8> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let _ = std::fs::remove_file(&self.sock_path);
        self.log()
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
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.sock_path);
    }
}
