//! The one-shot HTTP listener on `127.0.0.1` that the browser is redirected to with the
//! authorization code (RFC 8252 §7.3). Any local process can connect to it, so it is
//! bounded on every side: one connection at a time, each given 5 seconds and 8 KiB for
//! its request; only `GET /callback` with our `state` counts. A request with another
//! state (or none) is answered 400 and ignored, and the listener keeps waiting until
//! its overall deadline, so a stray or hostile request can neither end nor hijack the
//! sign-in. The server's error with our state (e.g. `access_denied`) ends it.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::error::CliError;

/// The path of the built-in client's redirect URI (`http://127.0.0.1/callback`, any port).
pub const CALLBACK_PATH: &str = "/callback";
const MAX_REQUEST_HEAD: usize = 8 * 1024;
const PER_CONNECTION: Duration = Duration::from_secs(5);

/// What one request to the listener amounts to.
#[derive(Debug, PartialEq, Eq)]
pub enum Callback {
    /// The code, with our state.
    Code(String),
    /// The server's error, with our state: the sign-in is over.
    Refused { error: String, description: String },
    /// A callback with another state, or none: ignored.
    WrongState,
    /// Another path or method.
    NotFound,
    /// Not an HTTP request we can read.
    Malformed,
}

/// Decides what a request head (request line and headers) is, for `expected_state`.
pub fn decide(head: &str, expected_state: &str) -> Callback {
    let Some(line) = head.lines().next() else {
        return Callback::Malformed;
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Callback::Malformed;
    };
    if !version.starts_with("HTTP/1.") || parts.next().is_some() {
        return Callback::Malformed;
    }
    // Origin form only (`/path?query`), as browsers send to a server.
    if !target.starts_with('/') || target.starts_with("//") {
        return Callback::Malformed;
    }
    let Ok(url) = reqwest::Url::parse(&format!("http://127.0.0.1{target}")) else {
        return Callback::Malformed;
    };
    if method != "GET" || url.path() != CALLBACK_PATH {
        return Callback::NotFound;
    }
    let param = |name: &str| {
        url.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    if param("state").as_deref() != Some(expected_state) {
        return Callback::WrongState;
    }
    if let Some(error) = param("error") {
        return Callback::Refused {
            error,
            description: param("error_description").unwrap_or_default(),
        };
    }
    match param("code") {
        Some(code) if !code.is_empty() => Callback::Code(code),
        _ => Callback::Malformed,
    }
}

/// The listener, bound.
pub struct Loopback {
    listener: TcpListener,
    port: u16,
}

impl Loopback {
    /// Listens on `127.0.0.1`, on a port the system picks.
    pub async fn bind() -> Result<Self, CliError> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.map_err(|e| {
            CliError::Failed(format!("cannot listen on 127.0.0.1 for the sign-in: {e}"))
        })?;
        let port = listener
            .local_addr()
            .map_err(|e| CliError::Failed(format!("cannot listen for the sign-in: {e}")))?
            .port();
        Ok(Loopback { listener, port })
    }

    pub fn redirect_uri(&self) -> String {
        format!("http://127.0.0.1:{}{CALLBACK_PATH}", self.port)
    }

    /// Waits, at most `limit`, for the browser to bring the code with `state`.
    pub async fn wait_for_code(self, state: &str, limit: Duration) -> Result<String, CliError> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let accepted = tokio::time::timeout_at(deadline, self.listener.accept()).await;
            let stream = match accepted {
                Err(_) => {
                    return Err(CliError::Failed(format!(
                        "no sign-in came back within {} minutes: run `appfence login` again \
                         (or `appfence login --device-code` where no browser can reach this \
                         machine's 127.0.0.1)",
                        limit.as_secs() / 60
                    )))
                }
                // E.g. out of descriptors: the next connection may fare better.
                Ok(Err(_)) => continue,
                Ok(Ok((stream, _))) => stream,
            };
            // One at a time, each bounded: a silent connection holds the line 5 s at most.
            match tokio::time::timeout(PER_CONNECTION, answer(stream, state)).await {
                Ok(Callback::Code(code)) => return Ok(code),
                Ok(Callback::Refused { error, description }) => {
                    let description = if description.is_empty() {
                        String::new()
                    } else {
                        format!(": {description}")
                    };
                    return Err(CliError::Failed(format!(
                        "the sign-in failed: {error}{description}"
                    )));
                }
                Ok(_) | Err(_) => continue,
            }
        }
    }
}

/// Reads one request, answers it with a small page, and says what it was.
async fn answer(mut stream: TcpStream, state: &str) -> Callback {
    let decision = match read_head(&mut stream).await {
        Some(head) => decide(&head, state),
        None => Callback::Malformed,
    };
    let (status, title, text) = match &decision {
        Callback::Code(_) => (
            "200 OK",
            "Signed in",
            "You are signed in to appfence. You can close this tab and return to the terminal."
                .to_string(),
        ),
        Callback::Refused { error, description } => (
            "200 OK",
            "Sign-in failed",
            format!("The sign-in failed: {error}: {description}. Return to the terminal."),
        ),
        Callback::WrongState => (
            "400 Bad Request",
            "Not this sign-in",
            "This answer does not belong to the sign-in the terminal is waiting for (its \
             state differs), so it was ignored."
                .to_string(),
        ),
        Callback::NotFound => ("404 Not Found", "Not found", "Nothing here.".to_string()),
        Callback::Malformed => (
            "400 Bad Request",
            "Bad request",
            "The request could not be read.".to_string(),
        ),
    };
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body><h1>{title}</h1><p>{}</p></body></html>",
        escape(&text)
    );
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nReferrer-Policy: no-referrer\r\n\
         Content-Security-Policy: default-src 'none'\r\nX-Content-Type-Options: nosniff\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
    decision
}

/// The request head, up to the blank line; `None` if the peer closes first, or sends
/// more than 8 KiB or something that is not text.
async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        match buf.windows(4).position(|w| w == b"\r\n\r\n") {
            Some(end) if end <= MAX_REQUEST_HEAD => {
                buf.truncate(end);
                return String::from_utf8(buf).ok();
            }
            _ if buf.len() > MAX_REQUEST_HEAD => return None,
            _ => {}
        }
    }
}

/// Text for HTML: the server's error description is not ours to trust.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(target: &str) -> String {
        format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1:5000")
    }

    #[test]
    fn only_a_callback_with_our_state_counts() {
        assert_eq!(
            decide(&get("/callback?code=c%2B1&state=s1"), "s1"),
            Callback::Code("c+1".into())
        );
        assert_eq!(
            decide(&get("/callback?code=c&state=s2"), "s1"),
            Callback::WrongState
        );
        assert_eq!(decide(&get("/callback?code=c"), "s1"), Callback::WrongState);
        assert_eq!(
            decide(
                &get("/callback?error=access_denied&error_description=no&state=s1"),
                "s1"
            ),
            Callback::Refused {
                error: "access_denied".into(),
                description: "no".into()
            }
        );
        // Another state's error does not end the sign-in either.
        assert_eq!(
            decide(&get("/callback?error=access_denied&state=x"), "s1"),
            Callback::WrongState
        );
        assert_eq!(
            decide(&get("/callback?state=s1"), "s1"),
            Callback::Malformed
        );
        assert_eq!(decide(&get("/favicon.ico"), "s1"), Callback::NotFound);
        assert_eq!(
            decide("POST /callback?code=c&state=s1 HTTP/1.1", "s1"),
            Callback::NotFound
        );
        assert_eq!(
            decide("GET http://evil/callback?code=c&state=s1 HTTP/1.1", "s1"),
            Callback::Malformed
        );
        assert_eq!(decide("", "s1"), Callback::Malformed);
        assert_eq!(decide("GET /callback", "s1"), Callback::Malformed);
    }

    #[test]
    fn the_servers_words_are_escaped() {
        assert_eq!(escape("<script>&'\""), "&lt;script&gt;&amp;&#39;&quot;");
    }

    async fn send(port: u16, request: &[u8]) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let _ = s.write_all(request).await;
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn strays_are_answered_and_ignored_until_the_callback() {
        let lb = Loopback::bind().await.unwrap();
        let uri = lb.redirect_uri();
        assert!(uri.starts_with("http://127.0.0.1:") && uri.ends_with("/callback"));
        let port: u16 = uri["http://127.0.0.1:".len()..uri.len() - "/callback".len()]
            .parse()
            .unwrap();
        let waiting = tokio::spawn(lb.wait_for_code("s1", Duration::from_secs(30)));
        // A silent connection only delays the next one.
        let silent = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let big = format!(
            "GET /callback?code=c&state=s1 HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(9000)
        );
        let wrong = send(
            port,
            b"GET /callback?code=evil&state=guess HTTP/1.1\r\n\r\n",
        )
        .await;
        assert!(wrong.starts_with("HTTP/1.1 400"), "{wrong}");
        // Over 8 KiB: not read to the end (its answer may be lost to the reset), and
        // its code, with the right state, does not count.
        send(port, big.as_bytes()).await;
        let ok = send(port, b"GET /callback?code=good&state=s1 HTTP/1.1\r\n\r\n").await;
        assert!(
            ok.starts_with("HTTP/1.1 200") && ok.contains("close this tab"),
            "{ok}"
        );
        assert_eq!(waiting.await.unwrap().unwrap(), "good");
        drop(silent);
    }

    #[tokio::test]
    async fn the_listener_gives_up_at_its_deadline() {
        let lb = Loopback::bind().await.unwrap();
        let e = lb
            .wait_for_code("s1", Duration::from_millis(100))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("appfence login"), "{e}");
    }
}
