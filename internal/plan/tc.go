package plan

// shape plans traffic control (tc qdiscs and filters) on the ports into
// the tc group. It plans nothing yet: interfaces' qos: keys are refused
// with their position (unsupportedPortSettings) until QoS lands here, with its step
// types and a tc contract of the kernel beside Links and Nftables.
func (b *builder) shape() {}
