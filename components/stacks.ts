// The split layout's wiring: a site or laptop stack reads its gateway stack's public outputs,
// and a gateway stack reads the tunnelPeers output of the stacks it serves. Only public keys,
// addresses and subnets cross. Everything is read, and checked, before any resource is made,
// so a missing stack or output stops the program with nothing half-applied.
import * as pulumi from "@pulumi/pulumi";
import { PROJECT } from "./config";

/** What a site or laptop stack needs from its gateway stack. */
export interface GatewayFacts {
    publicKey: string;
    endpoint: string;
    publicAddress: string;
    listenPort: number;
    tunnelMtu: number;
    peerAddresses: Record<string, { addressV4: string; addressV6: string }>;
}

function stackError(key: string, stack: string, what: string, fix: string): pulumi.RunError {
    return new pulumi.RunError(`${PROJECT}:${key}: ${what} of stack "${stack}"; ${fix}. Nothing was created.`);
}

async function readOutput(ref: pulumi.StackReference, key: string, stack: string, output: string): Promise<unknown> {
    let details: pulumi.StackReferenceOutputDetails;
    try {
        details = await ref.getOutputDetails(output);
    } catch (e) {
        throw stackError(key, stack, `cannot read the outputs (${(e as Error).message.split("\n")[0]})`, "check the name (org/project/stack) and that the stack exists and has been deployed");
    }
    const value = details.value ?? details.secretValue;
    if (value === undefined) throw stackError(key, stack, `there is no output "${output}"`, `run \`pulumi up\` in ${stack} first (it must be a wgexit stack)`);
    return value;
}

/** The gateway stack's public facts. */
export async function readGatewayStack(stack: string): Promise<GatewayFacts> {
    const ref = new pulumi.StackReference(`gateway-stack`, { name: stack });
    const [publicKey, endpoint, publicAddress, tunnel, peerAddresses] = await Promise.all(
        ["gatewayPublicKey", "gatewayEndpoint", "gatewayAddress", "tunnel", "peerAddresses"].map((o) => readOutput(ref, "gatewayStack", stack, o)),
    );
    const t = tunnel as { mtu: number; listenPort: number };
    return {
        publicKey: publicKey as string,
        endpoint: endpoint as string,
        publicAddress: publicAddress as string,
        listenPort: t.listenPort,
        tunnelMtu: t.mtu,
        peerAddresses: peerAddresses as GatewayFacts["peerAddresses"],
    };
}

/** Each peer stack's tunnelPeers output, in the order the config lists the stacks. */
export async function readPeerStacks(stacks: string[]): Promise<{ stack: string; tunnelPeers: unknown }[]> {
    return Promise.all(
        stacks.map(async (stack, i) => {
            const ref = new pulumi.StackReference(`peer-stack-${i}`, { name: stack });
            return { stack, tunnelPeers: await readOutput(ref, `peerStacks[${i}]`, stack, "tunnelPeers") };
        }),
    );
}
