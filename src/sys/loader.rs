//! The dynamic loader: which loaded object (executable or shared library)
//! holds an address.

/// A loaded object as the dynamic loader knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LoadedObject {
    /// The address the object is loaded at.
    pub(crate) base: usize,
    /// The object's path as the loader names it (empty if it has none).
    pub(crate) path: Vec<u8>,
}

/// The object that holds the code at `addr` in this process, if the loader
/// knows one. `addr` is only compared with the objects' ranges, never read.
pub(crate) fn loaded_object(addr: usize) -> Option<LoadedObject> {
    let mut info = std::mem::MaybeUninit::<libc::Dl_info>::uninit();
    // SAFETY: `dladdr` only compares the address with the loaded objects'
    // ranges (it never dereferences it), and fills `info` when it returns
    // non-zero.
    let found = unsafe { libc::dladdr(addr as *const libc::c_void, info.as_mut_ptr()) };
    if found == 0 {
        return None;
    }
    // SAFETY: filled by the successful `dladdr` above.
    let info = unsafe { info.assume_init() };
    let path = if info.dli_fname.is_null() {
        Vec::new()
    } else {
        // SAFETY: a non-null `dli_fname` is the loader's NUL-terminated name
        // of the object, valid until the object is unloaded, and copied at
        // once. Only `dlclose` unloads an object (and only one that `dlopen`
        // loaded); nothing in this crate calls it, and the callers ask about
        // the pool's trampolines, which are in the program's own objects.
        unsafe { std::ffi::CStr::from_ptr(info.dli_fname) }
            .to_bytes()
            .to_vec()
    };
    Some(LoadedObject {
        base: info.dli_fbase as usize,
        path,
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn finds_the_object_that_holds_a_function() {
        let here = super::loaded_object(finds_the_object_that_holds_a_function as fn() as usize)
            .expect("the loader knows the test binary");
        let path = std::ffi::OsStr::from_bytes(&here.path);
        let exe = std::env::current_exe().unwrap();
        assert_eq!(
            std::fs::canonicalize(path).unwrap(),
            std::fs::canonicalize(exe).unwrap()
        );
        assert_ne!(here.base, 0);
        assert_eq!(super::loaded_object(16), None);
    }
}
