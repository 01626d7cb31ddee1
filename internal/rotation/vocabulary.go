package rotation

// The engine's vocabularies, each a type of its own: what a visit did to a key (ActionKind), what a
// plan says of a user (PlanState) and will do next (NextAction), and why a visit decided as it did
// (the reasons below, the same words in a plan and in a visit's result).

// ActionKind is one thing a visit did to one key.
type ActionKind string

// Action kinds, as a report lists them.
const (
	KindAdopted       ActionKind = "adopted"
	KindCreated       ActionKind = "created"
	KindVerified      ActionKind = "verified"
	KindPromoted      ActionKind = "promoted"
	KindDelivered     ActionKind = "delivered" // every delivery target holds the key
	KindDeactivated   ActionKind = "deactivated"
	KindDeleted       ActionKind = "deleted"
	KindDeletedOrphan ActionKind = "deleted_orphan"
	KindRolledBack    ActionKind = "rolled_back"
)

// Would is the kind a dry run reports for a next action it did not take.
func Would(next NextAction) ActionKind { return ActionKind("would_" + string(next)) }

// PlanState is what a plan says of a user.
type PlanState string

// Plan states.
const (
	PlanOK         PlanState = "ok"
	PlanDue        PlanState = "due"
	PlanRotating   PlanState = "rotating"
	PlanHeld       PlanState = "held"
	PlanBlocked    PlanState = "blocked"
	PlanBackingOff PlanState = "backing_off"
	PlanExempt     PlanState = "exempt"
	PlanUnmanaged  PlanState = "unmanaged"
	PlanError      PlanState = "error"
	PlanDenied     PlanState = "denied" // outside Keyward's permissions
)

// NextAction is what the engine will do next for a user.
type NextAction string

// Next actions.
const (
	NextRotate     NextAction = "rotate"
	NextDeactivate NextAction = "deactivate"
	NextDelete     NextAction = "delete"
	NextResume     NextAction = "resume"
	NextNone       NextAction = "none"
)

// Reasons a visit and a plan give alike.
const (
	ReasonTwoUnknownActive = "the user holds two active keys that Keyward does not know: import the one in use (keyward vault import) and deactivate the other, or exempt the user"
	ReasonNoActiveKey      = "the user has no active key"
	ReasonNoRoom           = "the user holds two keys and neither is an inactive key Keyward may delete: delete the one Keyward did not retire, or allow it with rotation.delete_foreign_inactive_after"
	ReasonNoRoomActive     = "the user holds two active keys: Keyward never deletes an active key to make room; move what still uses the old key to the current one (Keyward deactivates it once unused for rotation.quiet_period), deactivate it yourself, or set rotation.force_deactivate"
)

// OutsidePermissions is the reason given for a user Keyward may not manage: the action refused, and
// what to change.
func OutsidePermissions(action string) string {
	return "outside Keyward's permissions: " + action + " was refused (set aws.user_path to the path deploy/iam's policy is scoped to, or grant the action)"
}
