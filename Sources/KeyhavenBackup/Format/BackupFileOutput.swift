import Foundation
import KeyhavenCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A backup file being written: bytes go to a hidden temporary file beside the target (mode 0600), which
/// ``commit()`` syncs and renames into place. Until then the target is untouched, and ``abort()`` (or a failed
/// commit) removes the temporary file, so a failed run leaves nothing behind.
public final class BackupFileOutput {
    /// The final path.
    public let path: String
    /// The temporary file's path.
    public let temporaryPath: String
    private var descriptor: Int32

    /// The prefix of temporary files, so a folder of scheduled backups can clear those a killed process left.
    public static let temporaryPrefix = ".keyhaven-backup-tmp-"

    /// Creates the temporary file beside `path`.
    ///
    /// - Throws: `BackupError.io` if the folder does not exist or the file cannot be created.
    public init(path: String) throws {
        let directory = (path as NSString).deletingLastPathComponent
        let name = (path as NSString).lastPathComponent
        guard !name.isEmpty else { throw BackupError.io("the output path \(path) names no file") }
        let folder = directory.isEmpty ? "." : directory
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: folder, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw BackupError.io("the folder \(folder) does not exist")
        }
        self.path = path
        let suffix = UUID().uuidString.prefix(8).lowercased()
        temporaryPath = folder + "/" + Self.temporaryPrefix + "\(getpid())-\(suffix)-" + name
        descriptor = open(temporaryPath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw BackupError.io("cannot create a file in \(folder): \(Self.errnoText())") }
        // Held until the file is renamed or removed: ``removeAbandoned(in:)`` leaves a locked file alone.
        _ = flock(descriptor, LOCK_EX | LOCK_NB)
    }

    /// Removes the temporary files in `folder` that no process is writing: those a killed process left. A file is
    /// being written while its writer holds its lock (the lock ends with the process); one created in the last
    /// few seconds is left too, since its writer may not have locked it yet. Returns how many were removed.
    @discardableResult
    public static func removeAbandoned(in folder: String) -> Int {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: folder) else { return 0 }
        var removed = 0
        for name in names where name.hasPrefix(temporaryPrefix) {
            let path = folder + "/" + name
            let descriptor = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
            guard descriptor >= 0 else { continue }
            defer { close(descriptor) }
            var status = stat()
            guard fstat(descriptor, &status) == 0, time(nil) - status.st_mtim.tv_sec >= 5,
                flock(descriptor, LOCK_EX | LOCK_NB) == 0
            else { continue }
            if unlink(path) == 0 { removed += 1 }
        }
        return removed
    }

    /// Appends bytes.
    ///
    /// - Throws: `BackupError.io` if they cannot be written (a full disk, an I/O error).
    public func write(_ data: Data) throws {
        guard descriptor >= 0 else { throw BackupError.io("the backup file is already closed") }
        let failed = data.withUnsafeBytes { buffer -> Bool in
            guard let base = buffer.baseAddress else { return false }
            var offset = 0
            while offset < buffer.count {
                let count = posixWrite(descriptor, base + offset, buffer.count - offset)
                if count < 0 {
                    if errno == EINTR { continue }
                    return true
                }
                offset += count
            }
            return false
        }
        if failed { throw BackupError.io("cannot write the backup file \(path): \(Self.errnoText())") }
    }

    /// Syncs the file, renames it to ``path`` (still locked, so no cleaner takes it meanwhile), and syncs the folder.
    ///
    /// - Throws: `BackupError.io` if any step fails; the temporary file is then removed.
    public func commit() throws {
        guard descriptor >= 0 else { throw BackupError.io("the backup file is already closed") }
        guard fsync(descriptor) == 0 else {
            let reason = Self.errnoText()
            abort()
            throw BackupError.io("cannot sync the backup file \(path): \(reason)")
        }
        guard rename(temporaryPath, path) == 0 else {
            let reason = Self.errnoText()
            abort()
            throw BackupError.io("cannot rename the backup file into \(path): \(reason)")
        }
        close(descriptor)
        descriptor = -1
        let directory = (path as NSString).deletingLastPathComponent
        let directoryFD = open(directory.isEmpty ? "." : directory, O_RDONLY | O_CLOEXEC)
        if directoryFD >= 0 {
            fsync(directoryFD)
            close(directoryFD)
        }
    }

    /// Closes and removes the temporary file.
    public func abort() {
        if descriptor >= 0 {
            close(descriptor)
            descriptor = -1
        }
        unlink(temporaryPath)
    }

    deinit {
        if descriptor >= 0 { abort() }
    }

    private static func errnoText() -> String { String(cString: strerror(errno)) }
}

/// write(2), under a name the type's own `write(_:)` does not hide.
private func posixWrite(_ descriptor: Int32, _ bytes: UnsafeRawPointer, _ count: Int) -> Int {
    write(descriptor, bytes, count)
}
