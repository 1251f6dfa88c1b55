//! A pickle writer (protocol 2) for the few values the manager attacks
//! send by hand: requests a Rust client would never make.

/// A pickle (protocol 2) of the few values the attacks send, written by
/// hand: the test needs requests no client would build.
#[derive(Clone)]
pub enum P {
    None,
    Int(i64),
    Str(String),
    Tuple(Vec<P>),
    List(Vec<P>),
    Dict(Vec<(P, P)>),
    /// Bytes written as they are (a value encoded ahead).
    Raw(Vec<u8>),
}

impl P {
    pub fn write(&self, out: &mut Vec<u8>) {
        match self {
            P::None => out.push(b'N'),
            P::Int(i) => match i32::try_from(*i) {
                Ok(i) => {
                    out.push(b'J');
                    out.extend(i.to_le_bytes());
                }
                Err(_) => {
                    out.extend([0x8a, 8]); // LONG1
                    out.extend(i.to_le_bytes());
                }
            },
            P::Str(s) => {
                out.push(b'X');
                out.extend((s.len() as u32).to_le_bytes());
                out.extend(s.as_bytes());
            }
            P::Tuple(items) => {
                out.push(b'(');
                items.iter().for_each(|v| v.write(out));
                out.push(b't');
            }
            P::List(items) => {
                out.extend(b"](");
                items.iter().for_each(|v| v.write(out));
                out.push(b'e');
            }
            P::Dict(items) => {
                out.extend(b"}(");
                for (k, v) in items {
                    k.write(out);
                    v.write(out);
                }
                out.push(b'u');
            }
            P::Raw(bytes) => out.extend(bytes),
        }
    }
}

/// A `str`.
pub fn s(v: &str) -> P {
    P::Str(v.into())
}

/// The pickle of the request `(ident, method, args, {})`.
pub fn request(ident: Option<&str>, method: &str, args: Vec<P>) -> Vec<u8> {
    let mut out = vec![0x80, 2];
    P::Tuple(vec![
        ident.map_or(P::None, s),
        s(method),
        P::Tuple(args),
        P::Dict(vec![]),
    ])
    .write(&mut out);
    out.push(b'.');
    out
}

/// The ident a `create` answered in `reply`: the first hex string after
/// its `#RETURN` tag.
pub fn returned_ident(reply: &[u8]) -> String {
    let at = reply.windows(7).position(|w| w == b"#RETURN").unwrap() + 7;
    reply[at..]
        .iter()
        .skip_while(|b| !b.is_ascii_hexdigit())
        .take_while(|b| b.is_ascii_hexdigit())
        .map(|&b| b as char)
        .collect()
}
