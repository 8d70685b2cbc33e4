module github.com/alkdev/watermill-redispubsub

go 1.24.0
