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
        defer { server.signal(SIGKILL) }
        let port = try #require(await server.listeningPort())
        let client = HTTPClient(eventLoopGroupProvider: .singleton)

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
        let pid = server.process.processIdentifier
        #expect(try prlimit(["--fsize=1:unlimited", "--pid", "\(pid)"]) == 0)
        let (status, body) = try await readiness(until: 503)
        #expect(status == 503, "\(body)")
        #expect(body.contains("database"), "\(body)")
        let health = try await client.execute(HTTPClientRequest(url: "http://127.0.0.1:\(port)/healthz"), timeout: .seconds(10))
        #expect(health.status == .ok, "the process is alive")

        #expect(try prlimit(["--fsize=unlimited", "--pid", "\(pid)"]) == 0)
        #expect(try await readiness(until: 200).0 == 200)
        #expect(server.process.isRunning)
        try await client.shutdown()
    }

    /// Runs util-linux's `prlimit`, which sets a limit on another process; returns its exit status.
    func prlimit(_ arguments: [String]) throws -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/prlimit")
        process.arguments = arguments
        try process.run()
        process.waitUntilExit()
        return process.terminationStatus
    }
}
