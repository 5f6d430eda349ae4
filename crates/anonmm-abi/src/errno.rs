//! Linux errno values (x86_64) as the model returns them, and the signals a touch may raise.

use std::fmt;

macro_rules! errnos {
    ($($name:ident = $val:expr, $msg:expr;)*) => {
        /// A Linux error number. Values are the x86_64 ones so that the oracle can compare directly.
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
        pub enum Errno { $(#[doc = concat!("`", stringify!($name), "` (", $val, "): ", $msg, ".")] $name,)* }
        impl Errno {
            /// The positive errno value (the syscall returns its negation).
            pub fn code(self) -> i32 { match self { $(Errno::$name => $val,)* } }
            /// The symbolic name (`"ENOMEM"`), as strace prints it.
            pub fn name(self) -> &'static str { match self { $(Errno::$name => stringify!($name),)* } }
            /// strerror text, as strace prints it in parentheses.
            pub fn message(self) -> &'static str { match self { $(Errno::$name => $msg,)* } }
            /// Parse a symbolic name, as [`Errno::name`] prints it.
            pub fn from_name(s: &str) -> Option<Errno> { match s { $(stringify!($name) => Some(Errno::$name),)* _ => None } }
            /// The errno with this positive value, if the model knows it.
            pub fn from_code(c: i32) -> Option<Errno> { $(if c == $val { return Some(Errno::$name); })* None }
        }
    };
}

errnos! {
    EPERM = 1, "Operation not permitted";
    ENOENT = 2, "No such file or directory";
    ESRCH = 3, "No such process";
    EINTR = 4, "Interrupted system call";
    EIO = 5, "Input/output error";
    EBADF = 9, "Bad file descriptor";
    ECHILD = 10, "No child processes";
    EAGAIN = 11, "Resource temporarily unavailable";
    ENOMEM = 12, "Cannot allocate memory";
    EACCES = 13, "Permission denied";
    EFAULT = 14, "Bad address";
    EBUSY = 16, "Device or resource busy";
    EEXIST = 17, "File exists";
    ENODEV = 19, "No such device";
    ENOTDIR = 20, "Not a directory";
    EISDIR = 21, "Is a directory";
    EINVAL = 22, "Invalid argument";
    ENFILE = 23, "Too many open files in system";
    EMFILE = 24, "Too many open files";
    ETXTBSY = 26, "Text file busy";
    EFBIG = 27, "File too large";
    ENOSPC = 28, "No space left on device";
    ESPIPE = 29, "Illegal seek";
    EROFS = 30, "Read-only file system";
    ERANGE = 34, "Numerical result out of range";
    ENOSYS = 38, "Function not implemented";
    EOVERFLOW = 75, "Value too large for defined data type";
    EOPNOTSUPP = 95, "Operation not supported";
    ETIMEDOUT = 110, "Connection timed out";
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::error::Error for Errno {}

/// Signals a memory access can raise.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Signal {
    /// SIGSEGV: no VMA at the address, or the VMA's protection (or pkey) forbids the access.
    SIGSEGV,
    /// SIGBUS: a file page beyond EOF, or a userfaultfd missing fault (`UFFD_FEATURE_SIGBUS`).
    SIGBUS,
}

impl Signal {
    /// The signal's name, as strace prints it (`--- SIGSEGV ...`).
    pub fn name(self) -> &'static str {
        match self {
            Signal::SIGSEGV => "SIGSEGV",
            Signal::SIGBUS => "SIGBUS",
        }
    }
    /// Parse a signal name, as [`Signal::name`] prints it.
    pub fn from_name(s: &str) -> Option<Signal> {
        match s {
            "SIGSEGV" => Some(Signal::SIGSEGV),
            "SIGBUS" => Some(Signal::SIGBUS),
            _ => None,
        }
    }
}

/// A syscall result: the value, or the errno the kernel would return.
pub type KResult<T> = Result<T, Errno>;
