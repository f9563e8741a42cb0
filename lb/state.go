package lb

// The states of a service in a backend, in a ServiceState.
const (
	// StateProgrammed: the backend serves the service as desired.
	StateProgrammed = "programmed"
	// StateUnexposed: the service has no address lbd serves; nothing to
	// program.
	StateUnexposed = "unexposed"
	// StateSkipped: the backend could not program it (Reason says why);
	// it keeps what it had before.
	StateSkipped = "skipped"
	// StateRejected: validation or an address conflict refused it; it
	// keeps its applied state.
	StateRejected = "rejected"
	// StateHeld: the max-delete guard held its deletion back; it keeps
	// its applied state.
	StateHeld = "held"
	// StateUnroutable: its pods do not route through the pod interface;
	// it keeps its applied state.
	StateUnroutable = "unroutable"
)

// ServiceStates lists every state a ServiceState may have.
var ServiceStates = []string{StateProgrammed, StateUnexposed, StateSkipped, StateRejected, StateHeld, StateUnroutable}

// ServiceState is what one backend made of one service in the last pass.
type ServiceState struct {
	// Key is the service's "namespace/name".
	Key string
	// State is one of ServiceStates; Reason says why for every state but
	// StateProgrammed and StateUnexposed.
	State  string
	Reason string
	// Spec identifies the desired spec the state was reached with (a
	// hash), so that a plan can tell the backend will skip the same spec
	// again. Empty when not known.
	Spec string
}
