//! A remote manager: a server started through the CLI (`multiproc manager
//! serve`) on TCP with an authkey, and a client that connects by address.
//!
//! Run: `cargo run --example remote_manager` (builds the CLI if needed).

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use multiproc::manager::Manager;

/// The `multiproc` binary beside this example's, built if it is missing.
fn cli() -> std::io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>/examples/");
    let bin = dir.join("multiproc");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "--bin", "multiproc"]);
        if dir.ends_with("release") {
            build.arg("--release");
        }
        build.status()?;
    }
    Ok(bin)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let key_file =
        std::env::temp_dir().join(format!("multiproc-example-key-{}", std::process::id()));
    // Readable by its owner only: the server refuses a key others can read.
    std::fs::write(&key_file, b"a long shared secret")?;
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600))?;

    let mut server = Command::new(cli()?)
        .args([
            "manager",
            "serve",
            "--listen",
            "tcp:127.0.0.1:0",
            "--authkey-file",
        ])
        .arg(&key_file)
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(server.stdout.take().expect("piped")).read_line(&mut line)?;
    let address = line.trim().trim_start_matches("serving on ").parse()?;
    println!("server says: {}", line.trim());

    // Any process that knows the address and the key is a client.
    let mut manager = Manager::connect(address, b"a long shared secret")?;
    let inventory = manager.dict::<String, u32>()?;
    inventory.set("apples".into(), 3)?;
    inventory.increment(&"apples".into(), 2)?;
    println!("remote inventory: {:?}", inventory.items()?);
    match Manager::connect(manager.address().clone(), b"a guess") {
        Err(e) => println!("a client with the wrong key: {e}"),
        Ok(_) => println!("a client with the wrong key got in (unexpected)"),
    }
    drop(inventory);
    manager.shutdown()?;
    let _ = server.wait();
    let _ = std::fs::remove_file(&key_file);
    Ok(())
}
