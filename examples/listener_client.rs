//! A listener process serves clients that know the authkey; a client with
//! the wrong key is refused, on both sides, before any message is exchanged.
//!
//! Run: `cargo run --example listener_client`

use multiproc::conn::{connect, Address, Listener};
use multiproc::Error;

fn main() -> multiproc::Result<()> {
    let path = std::env::temp_dir().join(format!("multiproc-example-{}.sock", std::process::id()));
    let address = Address::Unix(path);
    let key: &[u8] = b"secret password";
    let listener = Listener::bind(&address, Some(key))?;

    // The server runs in a scope: it borrows the listener, and is joined
    // when the scope ends.
    multiproc::scope(|s| -> multiproc::Result<()> {
        let mut server = s.fallible(|| -> multiproc::Result<()> {
            for _ in 0..2 {
                match listener.accept() {
                    Ok(mut conn) => {
                        let question: String = conn.recv()?;
                        println!("server: got {question:?}");
                        conn.send(&format!(
                            "{} reversed is {}",
                            question,
                            question.chars().rev().collect::<String>()
                        ))?;
                    }
                    Err(Error::AuthenticationFailed(why)) => {
                        println!("server: refused a client: {why}")
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        });
        server.start()?;

        let mut good = connect(&address, Some(key))?;
        good.send("stressed")?;
        println!("client: {}", good.recv::<String>()?);

        match connect(&address, Some(b"wrong password")) {
            Err(Error::AuthenticationFailed(why)) => {
                println!("client with the wrong key: refused ({why})")
            }
            other => println!("client with the wrong key: unexpected {other:?}"),
        }
        server.join()?;
        Ok(())
    })
}
