import Foundation

/// Runs the built `keyhaven` executable, for tests of what an operator sees: exit codes, stderr, signals.
public struct KeyhavenBinary: Sendable {
    /// The executable's path, next to the test bundle in the build folder.
    public let path: String

    /// Finds the executable built alongside the tests.
    ///
    /// - Throws: `TestSetupError` if it was not built (run `swift build` before `swift test --skip-build`).
    public init() throws {
        var directory = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        for _ in 0..<6 {
            directory.deleteLastPathComponent()
            let candidate = directory.appendingPathComponent("keyhaven").path
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: candidate, isDirectory: &isDirectory), !isDirectory.boolValue,
                FileManager.default.isExecutableFile(atPath: candidate)
            {
                path = candidate
                return
            }
        }
        throw TestSetupError("the keyhaven executable was not found next to the tests; run `swift build` first")
    }

    /// The executable at `path`.
    public init(path: String) {
        self.path = path
    }

    /// A started process with its output collected.
    ///
    /// Started with `posix_spawn`, not Foundation's `Process`: on Linux, `Process.run()` reads past the entries of
    /// `/proc/self/fd` while it looks for the highest open descriptor, and now and then crashes the test process
    /// (swift-corelibs-foundation #5472, in this toolchain).
    public final class Running: @unchecked Sendable {
        /// The process's id.
        public let processIdentifier: pid_t
        /// Where the process's stdin is written (closing it ends the input).
        public let standardInput: FileHandle
        let stdoutPipe = Pipe()
        let stderrPipe = Pipe()
        private let lock = NSLock()
        private var stdoutData = Data()
        private var stderrData = Data()
        /// The status `waitpid` gave once the process ended.
        private var ended: Int32?

        init(path: String, arguments: [String], environment: [String: String], directory: String) throws {
            let stdinPipe = Pipe()
            standardInput = stdinPipe.fileHandleForWriting
            var actions = posix_spawn_file_actions_t()
            posix_spawn_file_actions_init(&actions)
            defer { posix_spawn_file_actions_destroy(&actions) }
            posix_spawn_file_actions_adddup2(&actions, stdinPipe.fileHandleForReading.fileDescriptor, 0)
            posix_spawn_file_actions_adddup2(&actions, stdoutPipe.fileHandleForWriting.fileDescriptor, 1)
            posix_spawn_file_actions_adddup2(&actions, stderrPipe.fileHandleForWriting.fileDescriptor, 2)
            // Nothing else of the test process (its servers' sockets, other children's pipes) goes to the child.
            guard Self.addChdir(&actions, directory) == 0, Self.addCloseFrom(&actions, 3) == 0 else {
                throw TestSetupError("posix_spawn cannot change directory or close descriptors here")
            }
            let argv = ([path] + arguments).map { strdup($0) } + [nil]
            let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
            defer { for pointer in argv + envp { free(pointer) } }
            var pid: pid_t = 0
            let spawned = posix_spawn(&pid, path, &actions, nil, argv, envp)
            // The child has its copies; the parent keeps only its own ends.
            try? stdinPipe.fileHandleForReading.close()
            try? stdoutPipe.fileHandleForWriting.close()
            try? stderrPipe.fileHandleForWriting.close()
            guard spawned == 0 else { throw TestSetupError("posix_spawn failed: \(spawned)") }
            processIdentifier = pid
            stdoutPipe.fileHandleForReading.readabilityHandler = { [weak self] handle in
                let data = handle.availableData
                self?.lock.withLock { self?.stdoutData.append(data) }
            }
            stderrPipe.fileHandleForReading.readabilityHandler = { [weak self] handle in
                let data = handle.availableData
                self?.lock.withLock { self?.stderrData.append(data) }
            }
        }

        private typealias Actions = UnsafeMutablePointer<posix_spawn_file_actions_t>
        private typealias AddChdir = @convention(c) (Actions?, UnsafePointer<CChar>?) -> Int32
        private typealias AddCloseFrom = @convention(c) (Actions?, Int32) -> Int32

        /// glibc's `posix_spawn_file_actions_addchdir_np`, which Swift's Glibc module does not declare.
        private static func addChdir(_ actions: Actions, _ path: String) -> Int32 {
            guard let symbol = dlsym(nil, "posix_spawn_file_actions_addchdir_np") else { return -1 }
            return unsafeBitCast(symbol, to: AddChdir.self)(actions, path)
        }

        /// glibc's `posix_spawn_file_actions_addclosefrom_np`, likewise.
        private static func addCloseFrom(_ actions: Actions, _ from: Int32) -> Int32 {
            guard let symbol = dlsym(nil, "posix_spawn_file_actions_addclosefrom_np") else { return -1 }
            return unsafeBitCast(symbol, to: AddCloseFrom.self)(actions, from)
        }

        /// Whether the process has not ended yet (reaping it once it has).
        public var isRunning: Bool {
            lock.withLock {
                if ended != nil { return false }
                var status: Int32 = 0
                guard waitpid(processIdentifier, &status, WNOHANG) == processIdentifier else { return true }
                ended = status
                return false
            }
        }

        /// Whether a signal ended the process (nil while it runs).
        public var endedBySignal: Bool? {
            guard !isRunning, let status = lock.withLock({ ended }) else { return nil }
            return status & 0x7f != 0
        }

        /// The exit status, or the signal's number if a signal ended it (nil while it runs).
        public var terminationStatus: Int32? {
            guard !isRunning, let status = lock.withLock({ ended }) else { return nil }
            return status & 0x7f != 0 ? status & 0x7f : (status >> 8) & 0xff
        }

        /// What the process wrote to stdout so far.
        public var stdout: String { lock.withLock { String(decoding: stdoutData, as: UTF8.self) } }
        /// What the process wrote to stderr so far.
        public var stderr: String { lock.withLock { String(decoding: stderrData, as: UTF8.self) } }

        /// Waits until `condition` holds on stderr, or the process ends, or `timeout` passes; returns whether it held.
        public func waitForStderr(timeout: Duration = .seconds(30), _ condition: (String) -> Bool) async -> Bool {
            let deadline = ContinuousClock.now + timeout
            while ContinuousClock.now < deadline {
                if condition(stderr) { return true }
                if !isRunning { return condition(stderr) }
                try? await Task.sleep(for: .milliseconds(5))
            }
            return false
        }

        /// The port `keyhaven serve` listens on, once it says so (nil if it does not within `timeout`).
        public func listeningPort(timeout: Duration = .seconds(30)) async -> Int? {
            await port(after: "Server started and listening on", timeout: timeout)
        }

        /// The port of the gateway's own listener (`KEYHAVEN_GATEWAY_ADDRESS`), once the server says so.
        public func gatewayPort(timeout: Duration = .seconds(30)) async -> Int? {
            await port(after: "Gateway listener started and listening on", timeout: timeout)
        }

        private func port(after announcement: String, timeout: Duration) async -> Int? {
            guard await waitForStderr(timeout: timeout, { $0.contains(announcement) }) else { return nil }
            return stderr.split(separator: "\n").first { $0.contains(announcement) }?.split(separator: ":").last
                .flatMap { Int($0.prefix { $0.isNumber }) }
        }

        /// Waits for the process to end (killing it after `timeout`) and returns its exit status (the signal's
        /// number if a signal ended it).
        public func wait(timeout: Duration = .seconds(60)) async -> Int32 {
            let deadline = ContinuousClock.now + timeout
            while isRunning {
                if ContinuousClock.now > deadline {
                    kill(processIdentifier, SIGINT)
                    kill(processIdentifier, SIGKILL)
                }
                try? await Task.sleep(for: .milliseconds(10))
            }
            // Let the pipes drain.
            try? await Task.sleep(for: .milliseconds(50))
            stdoutPipe.fileHandleForReading.readabilityHandler = nil
            stderrPipe.fileHandleForReading.readabilityHandler = nil
            lock.withLock {
                stdoutData.append(stdoutPipe.fileHandleForReading.readDataToEndOfFile())
                stderrData.append(stderrPipe.fileHandleForReading.readDataToEndOfFile())
            }
            return terminationStatus ?? -1
        }

        /// Sends a signal.
        public func signal(_ signal: Int32) {
            kill(processIdentifier, signal)
        }

        // A test that drops a process without waiting for it must not leave the pipes' readers registered: the
        // pipes close with this object, and a reader left on a closed (and reused) descriptor breaks the event loop
        // that serves every reader in the process. A process still running is killed and reaped.
        deinit {
            stdoutPipe.fileHandleForReading.readabilityHandler = nil
            stderrPipe.fileHandleForReading.readabilityHandler = nil
            if lock.withLock({ ended }) == nil {
                kill(processIdentifier, SIGKILL)
                var status: Int32 = 0
                waitpid(processIdentifier, &status, 0)
            }
        }
    }

    /// Starts `keyhaven <arguments>` in `directory` with exactly `environment` (plus PATH and HOME).
    public func start(_ arguments: [String], environment: [String: String] = [:], in directory: String) throws
        -> Running
    {
        var env = environment
        let inherited = ProcessInfo.processInfo.environment
        env["PATH"] = inherited["PATH"] ?? "/usr/bin:/bin"
        env["HOME"] = inherited["HOME"] ?? "/tmp"
        // Absolute: the child changes to `directory` before it runs the executable.
        let executable = URL(fileURLWithPath: path).standardizedFileURL.path
        return try Running(path: executable, arguments: arguments, environment: env, directory: directory)
    }

    /// Runs `keyhaven <arguments>` to completion and returns (exit status, stdout, stderr).
    public func run(
        _ arguments: [String], environment: [String: String] = [:], in directory: String,
        timeout: Duration = .seconds(120)
    ) async throws -> (status: Int32, stdout: String, stderr: String) {
        let running = try start(arguments, environment: environment, in: directory)
        let status = await running.wait(timeout: timeout)
        return (status, running.stdout, running.stderr)
    }
}
