// How the program reaches a host: over SSH with @pulumi/command's remote.Command.
// One place builds the connection and the command resource so every host step looks alike.
import * as command from "@pulumi/command";
import type * as pulumi from "@pulumi/pulumi";

export interface HostConnection {
    host: pulumi.Input<string>;
    port: number;
    user: string;
    privateKey: pulumi.Input<string>;
    /** Pin the host key when known; without it the provider accepts any key (its documented default). */
    hostKey?: string;
    /** Retry dialing while a new instance boots. */
    waitForBoot?: boolean;
}

export function toConnectionArgs(c: HostConnection): command.types.input.remote.ConnectionArgs {
    return {
        host: c.host,
        port: c.port,
        user: c.user,
        privateKey: c.privateKey,
        hostKey: c.hostKey,
        dialErrorLimit: c.waitForBoot ? -1 : 10,
        perDialTimeout: 15,
    };
}

export interface HostStepArgs {
    connection: HostConnection;
    create: pulumi.Input<string>;
    /** When set, a change runs this instead of replacing the step (it must converge in place). */
    update?: pulumi.Input<string>;
    delete?: pulumi.Input<string>;
    /** A change replaces the step (delete, then create). */
    triggers?: pulumi.Input<unknown>[];
}

/** One idempotent host change with its matching delete. */
export function hostStep(name: string, args: HostStepArgs, opts: pulumi.CustomResourceOptions): command.remote.Command {
    return new command.remote.Command(
        name,
        {
            connection: toConnectionArgs(args.connection),
            create: args.create,
            update: args.update,
            delete: args.delete,
            triggers: args.triggers,
            // Values reach the host inside the command text; sshd usually refuses Setenv.
            addPreviousOutputInEnv: false,
            // No step prints a secret: keys stay on the hosts, only public keys are printed.
            logging: "stdoutAndStderr",
        },
        { deleteBeforeReplace: true, ...opts },
    );
}
