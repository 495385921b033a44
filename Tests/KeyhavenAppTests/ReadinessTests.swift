import AsyncHTTPClient
import Foundation
import KeyhavenTestSupport
import Testing

/// `/readyz` of a real `keyhaven serve` on SQLite whose files stop growing, as on a full disk: the database still
/// answers queries, and readiness must still say it cannot serve.
@Suite("Readiness")
struct ReadinessTests {
    @Test("on SQLite, /readyz reports a database that cannot be written as not ready, and ready again once it can")
    func unwritableDatabase() async throws {
        let binary = try KeyhavenBinary()
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        await (try directory.openRuntime()).shutdown()
        let server = try binary.start(["serve"], environment: directory.serveEnvironment, in: directory.path)
        let client = HTTPClient(eventLoopGroupProvider: .singleton)
        do {
            try await check(server, client)
        } catch {
            Issue.record(error)
        }
        try await client.shutdown()
        server.signal(SIGKILL)
        _ = await server.wait()
    }

    func check(_ server: KeyhavenBinary.Running, _ client: HTTPClient) async throws {
        let port = try #require(await server.listeningPort())

        /// `/readyz`'s status and body, asked until `wanted` (at most 40 times, half a second apart: the write
        /// check runs at most once a second).
        func readiness(until wanted: Int) async throws -> (Int, String) {
            var last = (0, "")
            for _ in 0..<40 {
                let response = try await client.execute(
                    HTTPClientRequest(url: "http://127.0.0.1:\(port)/readyz"), timeout: .seconds(10))
                let body = String(buffer: try await response.body.collect(upTo: 1 << 16))
                last = (Int(response.status.code), body)
                if last.0 == wanted { return last }
                try await Task.sleep(for: .milliseconds(500))
            }
            return last
        }
        #expect(try await readiness(until: 200).0 == 200)

        // Every write past a file's first byte now fails (EFBIG), as writes fail on a full disk.
        let pid = server.processIdentifier
        #expect(await fileSizeLimit(of: pid, "1"))
        let (status, body) = try await readiness(until: 503)
        #expect(status == 503, "\(body)")
        #expect(body.contains("database"), "\(body)")
        let health = try await client.execute(
            HTTPClientRequest(url: "http://127.0.0.1:\(port)/healthz"), timeout: .seconds(10))
        #expect(health.status == .ok, "the process is alive")

        #expect(await fileSizeLimit(of: pid, "unlimited"))
        #expect(try await readiness(until: 200).0 == 200)
        #expect(server.isRunning)
    }

    /// Sets another process's soft file-size limit with util-linux's `prlimit`, spawned and reaped directly (no
    /// Foundation `Process`, whose pipes and sources other tests' processes share); whether it succeeded.
    func fileSizeLimit(of pid: Int32, _ limit: String) async -> Bool {
        var child: pid_t = 0
        let words: [String] = ["prlimit", "--fsize=\(limit):unlimited", "--pid", "\(pid)"]
        var arguments: [UnsafeMutablePointer<CChar>?] = words.map { strdup($0) }
        arguments.append(nil)
        defer { for argument in arguments { free(argument) } }
        guard posix_spawn(&child, "/usr/bin/prlimit", nil, nil, arguments, environ) == 0 else { return false }
        var status: Int32 = 0
        for _ in 0..<1000 {
            if waitpid(child, &status, WNOHANG) == child { return status == 0 }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return false
    }
}
