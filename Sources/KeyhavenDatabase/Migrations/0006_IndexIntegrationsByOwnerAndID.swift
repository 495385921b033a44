extension Migration {
    /// Lists page through an owner's integrations newest first by id (time-ordered): an index in that order keeps
    /// a page as cheap with a million integrations as with a thousand.
    static let indexIntegrationsByOwnerAndID = Migration(version: 6, name: "IndexIntegrationsByOwnerAndID") { _ in
        ["CREATE INDEX integrations_owner_id ON integrations (owner_id, id)"]
    }
}
