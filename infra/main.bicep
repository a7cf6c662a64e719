// One `azd up` deploys the whole system: identities, Service Bus, Durable Task Scheduler, registry,
// Container Apps environment and the worker. Subscription scope so azd can create the resource group.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('azd environment name; names the resource group and seeds unique resource names.')
param environmentName string

@minLength(1)
@description('Region for every resource.')
param location string

@description('Object id of the deploying user (azd fills AZURE_PRINCIPAL_ID): gets the DTS dashboard role and Service Bus Data Sender. Empty = none.')
param principalId string = ''

@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
@description('Type of principalId (ServicePrincipal when deploying from CI).')
param principalType string = 'User'

@allowed([
  'Consumption'
  'Dedicated'
])
@description('Durable Task Scheduler SKU.')
param dtsSkuName string = 'Consumption'

@minValue(1)
@description('Dedicated SKU capacity units (ignored for Consumption).')
param dtsDedicatedCapacity int = 1

@description('IP addresses / CIDR ranges allowed to reach the scheduler. An empty list denies all traffic; Container Apps egress IPs are not fixed, hence the open default.')
param dtsIpAllowlist array = [
  '0.0.0.0/0'
]

@description('Task hub name.')
param taskHubName string = 'default'

@allowed([
  'queue'
  'topic'
])
@description('What the worker reads (azd: SERVICEBUS_SOURCE). queue: the queue queueName. topic: the subscription subscriptionName of the topic topicName, plus the retry queue retryQueueName that only the worker reads (needs serviceBusSku Standard or Premium).')
param serviceBusSource string = 'queue'

@description('Session mode (azd: SERVICEBUS_SESSIONS=true): the queue, or the subscription and its retry queue, require sessions, and the worker handles each session\'s messages one at a time, in order (README#sessions). Service Bus cannot turn sessions on or off for an existing entity, so the session-enabled entities have names of their own (the defaults below).')
param requiresSession bool = false

@description('Queue name (queue form); equal to infra/servicebus-emulator/Config.json and sbworker.core.config.DEFAULT_QUEUE (DEFAULT_SESSION_QUEUE in session mode).')
param queueName string = requiresSession ? 'workflow-requests-sessions' : 'workflow-requests'

@description('Topic name (topic form); equal to infra/servicebus-emulator/Config.json and sbworker.core.config.DEFAULT_TOPIC.')
param topicName string = 'workflow-events'

@minLength(1)
@maxLength(50)
@description('The subscription the worker reads (topic form); equal to Config.json and sbworker.core.config.DEFAULT_SUBSCRIPTION (DEFAULT_SESSION_SUBSCRIPTION in session mode).')
param subscriptionName string = requiresSession ? 'sbworker-sessions' : 'sbworker'

@description('Queue only the worker reads, where early approvals wait for their instance (topic form); the code default for SERVICEBUS_RETRY_QUEUE is <topic>-<subscription>-retry.')
param retryQueueName string = '${topicName}-${subscriptionName}-retry'

@allowed([
  'Basic'
  'Standard'
  'Premium'
])
@description('Service Bus tier.')
param serviceBusSku string = 'Standard'

@description('Worker image; azd sets SERVICE_WORKER_IMAGE_NAME after the first deploy. Empty = placeholder image.')
param workerImageName string = ''

@minValue(0)
@description('Minimum worker replicas.')
param minReplicas int = 1

@minValue(1)
@description('Maximum worker replicas.')
param maxReplicas int = 10

@description('Also deploy the dashboard as a container app of its own, behind Entra ID (azd: DEPLOY_DASHBOARD).')
param deployDashboard bool = false

@description('Client id of the Entra ID app registration people sign in to the dashboard with (DASHBOARD_ENTRA_CLIENT_ID); needed with deployDashboard.')
param dashboardEntraClientId string = ''

@secure()
@description('A client secret of that app registration (DASHBOARD_ENTRA_CLIENT_SECRET).')
param dashboardEntraClientSecret string = ''

@description('Let the dashboard change things (terminate, purge, resubmit, starts, approvals) for users with the Dashboard.Operator app role; read-only when false (DASHBOARD_ALLOW_ACTIONS).')
param dashboardAllowActions bool = false

var abbrs = {
  resourceGroup: 'rg-'
  identity: 'id-'
  serviceBus: 'sb-'
  scheduler: 'dts-'
  workspace: 'log-'
  appInsights: 'appi-'
  environment: 'cae-'
  registry: 'cr'
  app: 'ca-'
}
var token = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: '${abbrs.resourceGroup}${environmentName}'
  location: location
  tags: tags
}

module identity 'modules/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    location: location
    tags: tags
    workerIdentityName: '${abbrs.identity}worker-${token}'
    scalerIdentityName: '${abbrs.identity}scaler-${token}'
  }
}

module serviceBus 'modules/servicebus.bicep' = {
  name: 'servicebus'
  scope: rg
  params: {
    location: location
    tags: tags
    namespaceName: '${abbrs.serviceBus}${token}'
    source: serviceBusSource
    queueName: queueName
    topicName: topicName
    subscriptionName: subscriptionName
    retryQueueName: retryQueueName
    requiresSession: requiresSession
    skuName: serviceBusSku
    workerPrincipalId: identity.outputs.workerPrincipalId
    scalerPrincipalId: identity.outputs.scalerPrincipalId
    userPrincipalId: principalId
    userPrincipalType: principalType
  }
}

module dts 'modules/dts.bicep' = {
  name: 'dts'
  scope: rg
  params: {
    location: location
    tags: tags
    schedulerName: '${abbrs.scheduler}${token}'
    taskHubName: taskHubName
    skuName: dtsSkuName
    dedicatedCapacity: dtsDedicatedCapacity
    ipAllowlist: dtsIpAllowlist
    workerPrincipalId: identity.outputs.workerPrincipalId
    userPrincipalId: principalId
    userPrincipalType: principalType
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    location: location
    tags: tags
    workspaceName: '${abbrs.workspace}${token}'
    appInsightsName: '${abbrs.appInsights}${token}'
    environmentName: '${abbrs.environment}${token}'
    publisherPrincipalId: identity.outputs.workerPrincipalId
  }
}

module registry 'modules/registry.bicep' = {
  name: 'registry'
  scope: rg
  params: {
    location: location
    tags: tags
    registryName: '${abbrs.registry}${token}'
    pullPrincipalId: identity.outputs.workerPrincipalId
  }
}

module worker 'modules/containerapp.bicep' = {
  name: 'worker'
  scope: rg
  params: {
    location: location
    tags: union(tags, {
      'azd-service-name': 'worker'
    })
    name: '${abbrs.app}worker-${token}'
    environmentId: monitoring.outputs.environmentId
    appInsightsName: monitoring.outputs.appInsightsName
    registryServer: registry.outputs.loginServer
    image: workerImageName
    workerIdentityId: identity.outputs.workerId
    workerClientId: identity.outputs.workerClientId
    scalerIdentityId: identity.outputs.scalerId
    dtsEndpoint: dts.outputs.endpoint
    taskHubName: dts.outputs.taskHubName
    serviceBusNamespaceName: serviceBus.outputs.namespaceName
    serviceBusNamespaceFqdn: serviceBus.outputs.namespaceFqdn
    serviceBusSource: serviceBus.outputs.source
    queueName: serviceBus.outputs.queueName
    topicName: serviceBus.outputs.topicName
    subscriptionName: serviceBus.outputs.subscriptionName
    retryQueueName: serviceBus.outputs.retryQueueName
    requiresSession: serviceBus.outputs.requiresSession
    minReplicas: minReplicas
    maxReplicas: maxReplicas
  }
}

module dashboard 'modules/dashboard.bicep' = if (deployDashboard) {
  name: 'dashboard'
  scope: rg
  params: {
    location: location
    tags: tags
    name: '${abbrs.app}dashboard-${token}'
    identityName: '${abbrs.identity}dashboard-${token}'
    environmentId: monitoring.outputs.environmentId
    environmentDefaultDomain: monitoring.outputs.environmentDefaultDomain
    registryServer: registry.outputs.loginServer
    registryName: registry.outputs.name
    image: workerImageName
    schedulerName: '${abbrs.scheduler}${token}'
    taskHubName: dts.outputs.taskHubName
    dtsEndpoint: dts.outputs.endpoint
    serviceBusNamespaceName: serviceBus.outputs.namespaceName
    serviceBusNamespaceFqdn: serviceBus.outputs.namespaceFqdn
    serviceBusSource: serviceBus.outputs.source
    queueName: serviceBus.outputs.queueName
    topicName: serviceBus.outputs.topicName
    subscriptionName: serviceBus.outputs.subscriptionName
    retryQueueName: serviceBus.outputs.retryQueueName
    entraClientId: dashboardEntraClientId
    entraClientSecret: dashboardEntraClientSecret
    allowActions: dashboardAllowActions
  }
}

// azd reads these (AZURE_CONTAINER_REGISTRY_ENDPOINT is where it pushes the image).
output AZURE_LOCATION string = location
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_CONTAINER_REGISTRY_ENDPOINT string = registry.outputs.loginServer
output DTS_ENDPOINT string = dts.outputs.endpoint
output TASKHUB_NAME string = dts.outputs.taskHubName
output DTS_DASHBOARD_URL string = dts.outputs.dashboardUrl
output SERVICEBUS_NAMESPACE string = serviceBus.outputs.namespaceFqdn
// The entities of the deployed form; the other form's are '' (the code treats an empty variable as unset).
output SERVICEBUS_QUEUE string = serviceBus.outputs.queueName
output SERVICEBUS_TOPIC string = serviceBus.outputs.topicName
output SERVICEBUS_SUBSCRIPTION string = serviceBus.outputs.subscriptionName
output SERVICEBUS_RETRY_QUEUE string = serviceBus.outputs.retryQueueName
// Publishers (`sbworker publish`, Publisher.from_environment) put each message in a session when this is true.
output SERVICEBUS_SESSIONS string = serviceBus.outputs.requiresSession ? 'true' : 'false'
output WORKER_APP_NAME string = worker.outputs.name
// The dashboard's address when deployDashboard is true (Container Apps authentication in front of it).
output DASHBOARD_URL string = deployDashboard ? dashboard.outputs.url : ''
