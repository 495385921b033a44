#if canImport(Glibc)
    import Glibc
#endif

/// The process's resource limits, as a server with many connections needs them.
public enum ProcessLimits {
    /// Raises the soft limit on open files to the hard one: every connection is a descriptor, and thousands of idle
    /// ones must not keep the process from opening more until their deadline closes them.
    public static func raiseOpenFiles() {
        var limit = rlimit()
        let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
        guard getrlimit(resource, &limit) == 0, limit.rlim_cur < limit.rlim_max else { return }
        limit.rlim_cur = limit.rlim_max
        _ = setrlimit(resource, &limit)
    }
}
