// How the program reaches a host: over SSH with @pulumi/command's remote.Command.
// One place builds the connection and the command resource so every host step looks alike.
// The semantics relied on here are @pulumi/command v1.2.1's (provider/pkg/provider/remote/):
//   - a change to `triggers` replaces the step; any other input change runs `update` (or
//     `create` again when there is no `update`) on the *new* connection (commandController.go,
//     common/inputs.go);
//   - `delete` runs only on delete or replace, with the recorded connection;
//   - `dialErrorLimit: -1` retries forever, and a refused login counts as a dial error
//     (connection.go: dialWithRetry, reachedDialingErrorLimit).
import * as command from "@pulumi/command";
import type * as pulumi from "@pulumi/pulumi";

/** The key the program signs in with. */
export interface SshCredentials {
    privateKey: pulumi.Input<string>;
    /** Its passphrase, when it has one (the provider cannot read an encrypted key without it). */
    privateKeyPassword?: pulumi.Input<string>;
}

export interface HostConnection {
    host: pulumi.Input<string>;
    port: number;
    user: string;
    credentials: SshCredentials;
    /** Pin the host key when known; without it the provider accepts any key (its documented default). */
    hostKey?: string;
    /**
     * A host the user named (an existing gateway, a KVM host, a laptop or its VM). Moving a
     * step to another such host replaces it, so its delete cleans the old host. Not for a cloud
     * instance this stack made: a new instance's address is converged, the old machine is gone.
     */
    namedByUser: boolean;
}

/** Dial attempts of an ordinary step: the provider's default, about a minute when the host refuses. */
const DIAL_ATTEMPTS = 10;
/**
 * Dial attempts while a new instance boots: about ten minutes when the port is refused (the
 * provider backs off from 0.1 s to 5 s between attempts), longer when packets are dropped
 * (15 s each). Bounded, so a wrong key or an address outside adminCidrs ends in an error.
 */
const BOOT_DIAL_ATTEMPTS = 120;

export function toConnectionArgs(c: HostConnection, waitForBoot = false): command.types.input.remote.ConnectionArgs {
    return {
        host: c.host,
        port: c.port,
        user: c.user,
        privateKey: c.credentials.privateKey,
        privateKeyPassword: c.credentials.privateKeyPassword,
        hostKey: c.hostKey,
        dialErrorLimit: waitForBoot ? BOOT_DIAL_ATTEMPTS : DIAL_ATTEMPTS,
        perDialTimeout: 15,
    };
}

export interface HostStepArgs {
    connection: HostConnection;
    create: pulumi.Input<string>;
    /** When set, a change runs this instead of `create` (it must converge in place). */
    update?: pulumi.Input<string>;
    delete?: pulumi.Input<string>;
    /** A change replaces the step (delete, then create). */
    triggers?: pulumi.Input<unknown>[];
    /** The step that waits for a new instance to boot: it may retry dialing for longer. */
    waitForBoot?: boolean;
}

/** One idempotent host change with its matching delete. */
export function hostStep(name: string, args: HostStepArgs, opts: pulumi.CustomResourceOptions): command.remote.Command {
    const c = args.connection;
    // Only triggers replace a step, so the host a user named is one: moving the step runs its
    // delete on the old host (from the recorded connection) and its create on the new one.
    const triggers = c.namedByUser ? [...(args.triggers ?? []), { host: c.host }] : args.triggers;
    return new command.remote.Command(
        name,
        {
            connection: toConnectionArgs(c, args.waitForBoot),
            create: args.create,
            update: args.update,
            delete: args.delete,
            triggers,
            // Values reach the host inside the command text; sshd usually refuses Setenv.
            addPreviousOutputInEnv: false,
            // No step prints a secret: keys stay on the hosts, only public keys are printed.
            logging: "stdoutAndStderr",
        },
        { deleteBeforeReplace: true, ...opts },
    );
}
