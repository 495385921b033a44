import Foundation
import KeyhavenStorage
import Logging
import ServiceLifecycle

/// Writes a signed checkpoint of the audit chain's head periodically and once more at shutdown, to the database
/// and to the log, so `keyhaven audit verify` can tell when the newest events were deleted (SPEC §8).
struct AuditCheckpointService: Service {
    let audit: SQLAuditLog
    let interval: Duration
    let logger: Logger

    func run() async throws {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: interval) }
            // Cancelled (the server failed to start, or did not stop in time): nothing to add.
            if Task.isCancelled { return }
            await write()
        }
    }

    private func write() async {
        do {
            guard let checkpoint = try await audit.checkpoint() else { return }
            // The log is a second copy outside the database: a trail cut below this line is detectable from it too.
            logger.notice(
                "audit checkpoint",
                metadata: [
                    "seq": "\(checkpoint.seq)", "head_hash": "\(checkpoint.headHash)", "key_id": "\(checkpoint.keyID)",
                    "signature": "\(checkpoint.signature)",
                ])
        } catch {
            logger.error(
                "could not write an audit checkpoint", metadata: ["error": "\(String(describing: type(of: error)))"])
        }
    }
}
