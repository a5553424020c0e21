//! Builds the deterministic busybox test image, prints its id, and optionally loads it or checks it against a pin.
//!
//! `cargo run -p provider --example test_image -- [--load] [--check sha256:<hex>]`
//! (see `provider/testdata/image/build.sh`). Reads `$PINFOLD_BUSYBOX` or `/bin/busybox`.

use provider::docker::testimage;

fn main() {
    std::process::exit(match run() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    })
}

fn run() -> Result<(), String> {
    let mut load = false;
    let mut check = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--load" => load = true,
            "--check" => check = Some(args.next().ok_or("--check needs an image id")?),
            _ => {
                return Err(format!(
                    "unknown argument {a:?} (expected --load, --check <id>)"
                ));
            }
        }
    }
    let path = testimage::busybox_path();
    let bb = testimage::read_busybox(&path).map_err(|e| e.to_string())?;
    let img = testimage::build(&bb, "65534:65534").map_err(|e| e.to_string())?;
    println!("{}", img.id);
    if let Some(want) = check
        && want != img.id
    {
        let got_bb = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bb));
        return Err(format!(
            "built {} but the pin is {want}; {} has sha256 {got_bb}, the pin was made from {}",
            img.id,
            path.display(),
            testimage::PINNED_BUSYBOX_SHA256
        ));
    }
    if load {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            let d = provider::docker::connect(std::time::Duration::from_secs(30))
                .await
                .map_err(|e| e.to_string())?;
            testimage::ensure_loaded(&d, &img)
                .await
                .map_err(|e| e.to_string())
        })?;
        eprintln!("loaded {} as {}", img.id, img.tag);
    }
    Ok(())
}
