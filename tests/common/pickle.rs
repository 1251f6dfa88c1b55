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
