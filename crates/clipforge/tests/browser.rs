//! The search page in a real browser: headless Chromium driven through chromedriver (WebDriver)
//! types a query, checks the result grid, uploads an image, labels the results zero-shot,
//! opens an image with its neighbours, and saves a screenshot. Needs Debian's `chromium` and
//! `chromium-driver` (`.ci/run` installs them); without them the test says so and passes,
//! except under CI (`CI` set), where it fails.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{clipforge, photo_folder, serve, tmp, trained_run, Kill};
use fantoccini::{ClientBuilder, Locator};

fn tool(env: &str, default: &str) -> Option<PathBuf> {
    let p = std::env::var_os(env).map_or_else(|| PathBuf::from(default), PathBuf::from);
    p.is_file().then_some(p)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn the_page_searches_uploads_labels_and_opens_neighbours() {
    let (Some(chromium), Some(driver)) = (
        tool("CHROMIUM", "/usr/bin/chromium"),
        tool("CHROMEDRIVER", "/usr/bin/chromedriver"),
    ) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the browser test: install chromium and chromium-driver (.ci/run does)"
        );
        eprintln!("browser test not run: no /usr/bin/chromium and /usr/bin/chromedriver (Debian packages chromium, chromium-driver)");
        return;
    };
    let run = trained_run("browser-run");
    let folder = tmp("browser-photos");
    photo_folder(&folder, 16);
    let index = tmp("browser-index");
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
    let (_server, addr) = serve(&index, &run, &[]);
    let url = format!("http://{addr}/");

    let port = free_port();
    let _driver = Kill(
        Command::new(&driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver"),
    );
    let profile = tmp("browser-profile");
    // CLIPFORGE_SCREENSHOT=PATH keeps the screenshot there (the README's is made so).
    let shot = std::env::var_os("CLIPFORGE_SCREENSHOT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp("browser-screenshot.png"));
    let upload = folder.join("img002.png");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                         "--no-first-run", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync",
                         "--window-size=1280,900",
                         format!("--user-data-dir={}", profile.display())],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let mut client = None;
        for _ in 0..50 {
            match ClientBuilder::new(connector.clone())
                .capabilities(caps.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
            {
                Ok(c) => {
                    client = Some(c);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        let c = client.expect("chromedriver answers");
        c.goto(&url).await.unwrap();

        // A text query fills the grid with scored thumbnails.
        c.find(Locator::Id("q"))
            .await
            .unwrap()
            .send_keys("a red square")
            .await
            .unwrap();
        c.find(Locator::Id("go"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        c.wait()
            .at_most(Duration::from_secs(30))
            .for_element(Locator::Css("#grid .card"))
            .await
            .unwrap();
        let cards = c.find_all(Locator::Css("#grid .card")).await.unwrap();
        assert_eq!(
            cards.len(),
            16,
            "every image is a result of a 40-result search"
        );
        let score: f32 = cards[0]
            .find(Locator::Css(".score"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
            .parse()
            .unwrap();
        assert!((-1.0..=1.0).contains(&score));
        let status = c
            .find(Locator::Id("status"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(status.contains("a red square"), "{status}");

        // Query by image: the upload finds itself first.
        c.find(Locator::Id("file"))
            .await
            .unwrap()
            .send_keys(upload.to_str().unwrap())
            .await
            .unwrap();
        let mut first = String::new();
        for _ in 0..100 {
            let s = c
                .find(Locator::Id("status"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            if s.contains("img002.png") {
                first = c
                    .find(Locator::Css("#grid .card .name"))
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap();
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(first, "img002.png");

        // Zero-shot labels on the shown results.
        c.find(Locator::Id("labels"))
            .await
            .unwrap()
            .send_keys("red, green, blue, yellow")
            .await
            .unwrap();
        c.find(Locator::Id("label"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let mut label = String::new();
        for _ in 0..100 {
            label = c
                .find(Locator::Css("#grid .card .label"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            if !label.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            label.ends_with('%'),
            "a label and its probability: {label:?}"
        );

        // Click: the full image and its neighbours.
        c.find(Locator::Css("#grid .card"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        c.wait()
            .at_most(Duration::from_secs(30))
            .for_element(Locator::Css("#near .card"))
            .await
            .unwrap();
        let near = c.find_all(Locator::Css("#near .card")).await.unwrap();
        assert_eq!(near.len(), 12);
        let png = c.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"));
        std::fs::write(&shot, png).unwrap();
        c.close().await.unwrap();
    });
    eprintln!("screenshot: {}", shot.display());
}
