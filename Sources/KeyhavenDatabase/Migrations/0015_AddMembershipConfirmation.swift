extension Migration {
    /// Invitations are accepted by whoever signs in with the invited email, and email addresses are not verified:
    /// an account made after the invitation may belong to someone who saw a leaked link and registered the address
    /// first. Such a membership waits for an owner's or admin's confirmation, and grants nothing until then. Every
    /// earlier membership is confirmed.
    static let addMembershipConfirmation = Migration(version: 15, name: "AddMembershipConfirmation") { kind in
        let t = Database.ColumnTypes(kind)
        let no = kind == .postgres ? "FALSE" : "0"
        return ["ALTER TABLE memberships ADD COLUMN pending_confirmation \(t.bool) NOT NULL DEFAULT \(no)"]
    }
}
