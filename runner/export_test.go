package runner

// What the tests of package runner_test (which may import packages that
// import runner, such as runner/observe) share with runner's own.
var (
	Hello             = hello
	AllocsPerRequest  = allocsPerRequest
	StartPlain        = startPlain
	StartServeHandler = startServeHandler
	RawGet            = rawGet
)
