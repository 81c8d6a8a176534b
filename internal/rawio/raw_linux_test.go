package rawio

// raw reports whether x reads and writes with raw system calls.
func raw(x *Conn) bool { return x.rc != nil }
