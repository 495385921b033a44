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
    public final class Running: @unchecked Sendable {
        public let process: Process
        let stdoutPipe = Pipe()
        let stderrPipe = Pipe()
        private let lock = NSLock()
        private var stdoutData = Data()
        private var stderrData = Data()

        init(process: Process) {
            self.process = process
            process.standardOutput = stdoutPipe
            process.standardError = stderrPipe
            stdoutPipe.fileHandleForReading.readabilityHandler = { [weak self] handle in
                let data = handle.availableData
                self?.lock.withLock { self?.stdoutData.append(data) }
            }
            stderrPipe.fileHandleForReading.readabilityHandler = { [weak self] handle in
                let data = handle.availableData
                self?.lock.withLock { self?.stderrData.append(data) }
            }
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
                if !process.isRunning { return condition(stderr) }
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

        /// Waits for the process to end (killing it after `timeout`) and returns its exit status.
        public func wait(timeout: Duration = .seconds(60)) async -> Int32 {
            let deadline = ContinuousClock.now + timeout
            while process.isRunning {
                if ContinuousClock.now > deadline {
                    process.interrupt()
                    kill(process.processIdentifier, SIGKILL)
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
            return process.terminationStatus
        }

        /// Sends a signal.
        public func signal(_ signal: Int32) {
            kill(process.processIdentifier, signal)
        }

        // A test that drops a process without waiting for it must not leave the pipes' readers registered: the
        // pipes close with this object, and a reader left on a closed (and reused) descriptor breaks the event loop
        // that serves every reader in the process.
        deinit {
            stdoutPipe.fileHandleForReading.readabilityHandler = nil
            stderrPipe.fileHandleForReading.readabilityHandler = nil
        }
    }

    /// Starts `keyhaven <arguments>` in `directory` with exactly `environment` (plus PATH and HOME).
    public func start(_ arguments: [String], environment: [String: String] = [:], in directory: String) throws
        -> Running
    {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        process.currentDirectoryURL = URL(fileURLWithPath: directory)
        var env = environment
        let inherited = ProcessInfo.processInfo.environment
        env["PATH"] = inherited["PATH"] ?? "/usr/bin:/bin"
        env["HOME"] = inherited["HOME"] ?? "/tmp"
        process.environment = env
        process.standardInput = Pipe()
        let running = Running(process: process)
        try process.run()
        return running
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
