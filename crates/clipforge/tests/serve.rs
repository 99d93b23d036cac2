//! `clipforge serve` against hostile and broken requests: path traversal in every spelling,
//! absolute paths, ids that are not ids, an upload over the limit, a non-image upload, garbage
//! JSON. Each gets a 4xx with a JSON error, and the server keeps serving. Requests are written
//! byte for byte on a socket, so no client tidies a `../` away first.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::{clipforge, photo_folder, png, serve, tmp, trained_run, COLOURS};

/// Send `head` (request line and headers, without the blank line) and `body`; the status and
/// the response body.
fn raw(addr: &str, head: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let req = format!(
        "{head}\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let _ = s.write_all(body); // the server may answer 413 before reading it all
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(out.len(), |p| p + 4);
    (status, out[split..].to_vec())
}

fn get(addr: &str, path: &str) -> (u16, Vec<u8>) {
    raw(addr, &format!("GET {path} HTTP/1.1"), b"")
}

fn multipart(field_type: &str, bytes: &[u8]) -> (String, Vec<u8>) {
    let boundary = "clipforgeboundary42";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"q.png\"\r\nContent-Type: {field_type}\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

fn json_error(status: u16, body: &[u8], want: std::ops::RangeInclusive<u16>, what: &str) {
    assert!(
        want.contains(&status),
        "{what}: status {status}, body {}",
        String::from_utf8_lossy(body)
    );
    let v: serde_json::Value = serde_json::from_slice(body)
        .unwrap_or_else(|_| panic!("{what}: not JSON: {}", String::from_utf8_lossy(body)));
    assert!(v["error"].is_string(), "{what}: {v}");
}

#[test]
fn the_server_answers_hostile_requests_with_4xx_and_keeps_serving() {
    let run = trained_run("serve-run");
    let folder = tmp("serve-photos");
    photo_folder(&folder, 8);
    let index = tmp("serve-index");
    let o = clipforge(&[
        "index",
        "--checkpoint",
        run.to_str().unwrap(),
        "--out",
        index.to_str().unwrap(),
        "--json",
        folder.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (_server, addr) = serve(&index, &run, &["--max-upload-mib", "1"]);
    let a = addr.as_str();

    // What works.
    let (st, body) = get(a, "/api/health");
    assert_eq!(st, 200);
    let health: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(health["images"], 8);
    let (st, body) = get(a, "/api/search?q=a%20red%20square&k=3");
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    let id = results[0]["id"].as_u64().unwrap();
    let (st, thumb) = get(a, &format!("/api/thumb/{id}"));
    assert_eq!(st, 200);
    assert!(thumb.starts_with(&[0xff, 0xd8]), "a JPEG thumbnail");
    let (st, full) = get(a, &format!("/api/image/{id}"));
    assert_eq!(st, 200);
    assert!(full.starts_with(b"\x89PNG"));
    let (ct, body) = multipart("image/png", &png(COLOURS[1], 3));
    let (st, res) = raw(
        a,
        &format!("POST /api/search?k=2 HTTP/1.1\r\nContent-Type: {ct}"),
        &body,
    );
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&res));
    let z = br#"{"labels": ["red square", "blue square"], "ids": [0, 1]}"#;
    let (st, res) = raw(
        a,
        "POST /api/zeroshot HTTP/1.1\r\nContent-Type: application/json",
        z,
    );
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&res));
    let v: serde_json::Value = serde_json::from_slice(&res).unwrap();
    let p: f64 = v["images"][0]["scores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["p"].as_f64().unwrap())
        .sum();
    assert!((p - 1.0).abs() < 1e-4, "probabilities sum to 1: {v}");
    let (st, page) = get(a, "/");
    assert_eq!(st, 200);
    assert!(String::from_utf8_lossy(&page).contains("clipforge search"));

    // Traversal and paths: never a file outside the index.
    let secret = folder.parent().unwrap().join("serve-secret.txt");
    std::fs::write(&secret, "do not serve").unwrap();
    for path in [
        "/api/image/../../../../etc/passwd",
        "/api/image/..%2f..%2f..%2fetc%2fpasswd",
        "/api/image/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/api/thumb/..%5c..%5cwindows%5cwin.ini",
        &format!("/api/image/{}", secret.display()),
        &format!(
            "/api/image/{}",
            secret.display().to_string().replace('/', "%2f")
        ),
        "/api/image/-1",
        "/api/image/1e3",
        "/api/image/99999999999999999999999",
        "/api/thumb/424242",
        "/../../etc/passwd",
        "/api/neighbors/abc",
        "/api/search?q=red&k=0",
        "/api/search?q=red&k=1000000",
        "/api/search?q=red&k=banana",
        "/api/search?k=3",
    ] {
        let (st, body) = get(a, path);
        json_error(st, &body, 400..=404, path);
        assert!(!String::from_utf8_lossy(&body).contains("do not serve"));
    }
    // Uploads: too big, not an image, not multipart, no image field.
    let (ct, body) = multipart("image/png", &vec![7u8; 3 << 20]);
    let (st, res) = raw(
        a,
        &format!("POST /api/search HTTP/1.1\r\nContent-Type: {ct}"),
        &body,
    );
    json_error(st, &res, 413..=413, "3 MiB upload over a 1 MiB limit");
    let (ct, body) = multipart("text/plain", b"hello");
    let (st, res) = raw(
        a,
        &format!("POST /api/search HTTP/1.1\r\nContent-Type: {ct}"),
        &body,
    );
    json_error(st, &res, 415..=415, "a text file as the image");
    let (ct, body) = multipart("image/png", b"not a png at all");
    let (st, res) = raw(
        a,
        &format!("POST /api/search HTTP/1.1\r\nContent-Type: {ct}"),
        &body,
    );
    json_error(st, &res, 415..=415, "garbage claiming to be a PNG");
    let (st, res) = raw(
        a,
        "POST /api/search HTTP/1.1\r\nContent-Type: application/json",
        b"{}",
    );
    json_error(st, &res, 400..=415, "not multipart");
    // Garbage JSON.
    for body in [
        &b"{\"labels\": [\"a\""[..],
        b"\x00\xff\xfe",
        b"[]",
        b"{\"labels\": [], \"ids\": []}",
        b"{\"labels\": [\"x\"], \"ids\": [123456]}",
        b"{\"labels\": [\"x\"], \"ids\": [0], \"path\": \"/etc/passwd\"}",
    ] {
        let (st, res) = raw(
            a,
            "POST /api/zeroshot HTTP/1.1\r\nContent-Type: application/json",
            body,
        );
        json_error(st, &res, 400..=422, &String::from_utf8_lossy(body));
    }
    let (st, res) = raw(
        a,
        "POST /api/zeroshot HTTP/1.1\r\nContent-Type: text/plain",
        b"{}",
    );
    json_error(st, &res, 400..=415, "JSON without its content type");

    // Still serving.
    let (st, _) = get(a, "/api/health");
    assert_eq!(st, 200);
    let (st, _) = get(a, "/api/search?q=a%20blue%20square&k=2");
    assert_eq!(st, 200);
}
