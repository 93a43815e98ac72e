//! The control socket: `lvs run` listens on a Unix socket (mode 0600: only the user running
//! lvs may change its rules), `lvs adm` sends it an ipvsadm command line (and, for `-R`, the
//! rules from its standard input) and prints the answer.
//!
//! Wire format, both directions length-prefixed (little-endian u32):
//! request = count, then each argument; then the stdin payload;
//! response = exit code (u32), stdout, stderr.

use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// Largest request or response field accepted (a restore file can be large).
pub const MAX_FIELD: usize = 64 << 20;
/// Most arguments in one request.
pub const MAX_ARGS: usize = 4096;

/// A command received on the control socket.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Request {
    /// ipvsadm arguments (without the program name).
    pub args: Vec<String>,
    /// Standard input of the client (for `-R`), empty otherwise.
    pub stdin: String,
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Response {
    /// Process exit status the client should exit with.
    pub code: u32,
    /// Text for the client's standard output.
    pub stdout: String,
    /// Text for the client's standard error.
    pub stderr: String,
}

fn write_field(w: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    w.write_all(&(bytes.len() as u32).to_le_bytes())?;
    w.write_all(bytes)
}

fn read_u32(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn read_field(r: &mut impl Read) -> io::Result<String> {
    let len = read_u32(r)? as usize;
    if len > MAX_FIELD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "control message field too large",
        ));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf)?;
    String::from_utf8(buf)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "control message is not UTF-8"))
}

impl Request {
    /// Sends the request.
    pub fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        w.write_all(&(self.args.len() as u32).to_le_bytes())?;
        for a in &self.args {
            write_field(w, a.as_bytes())?;
        }
        write_field(w, self.stdin.as_bytes())?;
        w.flush()
    }

    /// Reads a request.
    pub fn read_from(r: &mut impl Read) -> io::Result<Request> {
        let n = read_u32(r)? as usize;
        if n > MAX_ARGS {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "too many arguments"));
        }
        let args = (0..n).map(|_| read_field(r)).collect::<io::Result<Vec<_>>>()?;
        Ok(Request {
            args,
            stdin: read_field(r)?,
        })
    }
}

impl Response {
    /// Sends the response.
    pub fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        w.write_all(&self.code.to_le_bytes())?;
        write_field(w, self.stdout.as_bytes())?;
        write_field(w, self.stderr.as_bytes())?;
        w.flush()
    }

    /// Reads a response.
    pub fn read_from(r: &mut impl Read) -> io::Result<Response> {
        Ok(Response {
            code: read_u32(r)?,
            stdout: read_field(r)?,
            stderr: read_field(r)?,
        })
    }
}

/// Sends `req` to the daemon at `path` and returns its answer.
pub fn call(path: &Path, req: &Request) -> io::Result<Response> {
    let mut s = UnixStream::connect(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot reach lvs at {}: {e} (is `lvs run` running?)",
                path.display()
            ),
        )
    })?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    req.write_to(&mut s)?;
    Response::read_from(&mut s)
}

/// The listening side; stops and removes its socket file when dropped.
pub struct ControlServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl fmt::Debug for ControlServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlServer").field("path", &self.path).finish()
    }
}

/// Binds a Unix socket at `path` with mode 0600 and no window in which it is more open: it is
/// bound inside a fresh 0700 directory, restricted, then renamed into place.
fn bind_private(path: &Path) -> io::Result<UnixListener> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(parent)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot create {}: {e}", parent.display())))?;
    let staging = parent.join(format!(".lvs-sock-{}", std::process::id()));
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir(&staging)?;
    fs::set_permissions(&staging, fs::Permissions::from_mode(0o700))?;
    let tmp = staging.join("sock");
    let result = (|| {
        let l = UnixListener::bind(&tmp)?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600))?;
        if let Ok(meta) = fs::symlink_metadata(path) {
            use std::os::unix::fs::FileTypeExt;
            if !meta.file_type().is_socket() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a socket", path.display()),
                ));
            }
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("another lvs is already listening on {}", path.display()),
                ));
            }
        }
        fs::rename(&tmp, path)?;
        Ok(l)
    })();
    let _ = fs::remove_dir_all(&staging);
    result
}

impl ControlServer {
    /// Listens on `path`; each request is answered by `handler`, one at a time (the
    /// handler is the single writer of the rules).
    pub fn start<F>(path: &Path, mut handler: F) -> io::Result<ControlServer>
    where
        F: FnMut(Request) -> Response + Send + 'static,
    {
        let listener = bind_private(path)?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = thread::Builder::new().name("lvs-control".into()).spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                        let resp = match Request::read_from(&mut s) {
                            Ok(req) => handler(req),
                            Err(e) => Response {
                                code: 2,
                                stderr: format!("bad control request: {e}\n"),
                                ..Response::default()
                            },
                        };
                        let _ = resp.write_to(&mut s);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(20))
                    }
                    Err(_) => thread::sleep(Duration::from_millis(20)),
                }
            }
        })?;
        Ok(ControlServer {
            path: path.to_path_buf(),
            stop,
            handle: Some(handle),
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        let _ = fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path(name: &str) -> PathBuf {
        std::env::temp_dir()
            .join(format!("lvs-ctl-test-{}-{name}", std::process::id()))
            .join("lvs.sock")
    }

    #[test]
    fn request_round_trip_and_socket_is_private() {
        let path = temp_path("rt");
        let server = ControlServer::start(&path, |req| Response {
            code: if req.args.is_empty() { 2 } else { 0 },
            stdout: format!("{}|{}", req.args.join(","), req.stdin),
            stderr: String::new(),
        })
        .unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "control socket must be 0600");
        let r = call(
            &path,
            &Request {
                args: vec!["-L".into(), "-n".into()],
                stdin: "x\ny".into(),
            },
        )
        .unwrap();
        assert_eq!(
            r,
            Response {
                code: 0,
                stdout: "-L,-n|x\ny".into(),
                stderr: String::new()
            }
        );
        let r = call(&path, &Request::default()).unwrap();
        assert_eq!(r.code, 2);
        // A second daemon on the same path is refused.
        let e = ControlServer::start(&path, |_| Response::default()).unwrap_err();
        assert!(e.to_string().contains("already listening"), "{e}");
        drop(server);
        assert!(!path.exists(), "socket removed on drop");
        let e = call(&path, &Request::default()).unwrap_err();
        assert!(e.to_string().contains("is `lvs run` running?"), "{e}");
    }

    #[test]
    fn oversized_fields_are_refused() {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&(MAX_FIELD as u32 + 1).to_le_bytes());
        assert!(Request::read_from(&mut bytes.as_slice()).is_err());
    }
}
